"""The pre-registered module study (protocol: studies/module_study_protocol.md, committed before any row).

Each run trains one arm on one seed exactly as the pipeline's default does (params.yaml's `pretrain`
and `datasets.synthetic`, the same 90 % of the train split the pretrain stage trains on), then scores
the encoder with the pipeline's own evaluation on all 10,000 test images: the lbfgs linear probe
(with its per-image hits, for paired tests), test_loo retrieval (Rank-1, mAP) and kNN-20; a module arm
also records its health (pairs/health.py). One JSON row per run is appended to
studies/module_study.jsonl with the arm's settings, seed, code version, threads and machine.

    python -m studies.module_study --shard 0/2        # stage 1: its arms on seeds 100-115 (skips written rows)
    python -m studies.module_study --stage 2 --shard 0/16   # stage 2 (amendment 1): 7 arms on seeds 200-215
    python -m studies.module_study --stage 3          # the oracle pair (amendment 2) on stage 2's seeds and rows file
    python -m studies.module_study --stage 4          # the second dataset (amendment 3; build it first: studies/digits_photos.py)
    python -m studies.module_study --analyse          # the protocol's contrasts over the rows (--stage 2: stage 2's)

Arms run in seed-major order (every arm of a seed before the next seed), so an interrupted study
leaves complete paired sets.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from studies.shards import my_share, run_shard

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "studies" / "module_study.jsonl"

RANDOM_DIMS = {"criteria": ["random"], "k_random": 0.42}  # as many random dimensions as the criterion picks
T02 = {"methods": {"mocov2": {"temperature": 0.2}}}
MECHANISM = {"pair_negatives": "generated", "pair_augment": True, "beta": 3.0}  # a pair that carries the mechanism
# arm -> (module on, pretrain overrides merged onto params.yaml's pretrain section)
ARMS: dict[str, tuple[bool, dict]] = {
    "baseline_t01": (False, {}),
    "module_t01": (True, {}),
    "random_t01": (True, {"synth": RANDOM_DIMS}),
    # stage 2 (protocol amendment 1)
    "baseline_t02": (False, T02),
    "module_t02": (True, T02),
    "random_t02": (True, {**T02, "synth": RANDOM_DIMS}),
    "alpha_only_t01": (True, {"nu": 0.0}),
    "mechanism_t01": (True, {"synth": MECHANISM}),
    "mechanism_random_t01": (True, {"synth": {**MECHANISM, **RANDOM_DIMS}}),
    # the oracle pair positive control (amendment 2): L_C + ν·L_Cp on (view, re-rendering with another scene and light)
    "oracle_t01": (True, {}),
}
ORACLE_ARMS = {"oracle_t01"}
# the second dataset (amendment 3): stage 1's arms and the untrained start on datasets.digits_photos
ARMS.update(
    {
        "digits_start": (False, {}),
        "digits_supervised": (False, {}),
        **{f"digits_{a}": ARMS[a] for a in ("baseline_t01", "module_t01", "random_t01")},
    }
)
ARM_DATASET = {arm: "digits_photos" for arm in ARMS if arm.startswith("digits_")}  # others: datasets.synthetic
ARM_METHOD = {"digits_start": "none", "digits_supervised": "supervised"}  # the untrained start, the labelled reference; others: mocov2
ORACLE_RENDERS = 4  # re-renderings of each pretraining image, one drawn per pair and step
# stage -> (arms, seeds, rows file): each stage has its fresh seeds and its own rows
STAGES = {
    1: (["baseline_t01", "module_t01", "random_t01"], list(range(100, 116)), ROWS),
    2: (
        ["baseline_t01", "baseline_t02", "module_t02", "random_t02", "alpha_only_t01", "mechanism_t01", "mechanism_random_t01"],
        list(range(200, 216)),
        ROOT / "studies" / "module_study_stage2.jsonl",
    ),
    # amendment 2: the oracle on stage 2's seeds, in stage 2's rows file (paired with its baseline_t01)
    3: (["oracle_t01"], list(range(200, 216)), ROOT / "studies" / "module_study_stage2.jsonl"),
    4: (  # amendment 3: the second dataset
        ["digits_start", "digits_supervised", "digits_baseline_t01", "digits_module_t01", "digits_random_t01"],
        list(range(300, 316)),
        ROOT / "studies" / "module_study_digits.jsonl",
    ),
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def settings(arm: str) -> tuple[bool, dict, dict]:
    """(module on, pretrain settings, dataset settings) of an arm on today's params.yaml; a dataset's root
    is made absolute (the repository's)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    synth, over = ARMS[arm]
    # quiet, one thread, float32 (amp acts on CUDA only: CPU rows are the same with or without it)
    quiet = {"checkpoint_every_steps": 10**9, "log_every_steps": 10**9, "monitor_every_steps": 0, "threads": 1, "amp": False}
    data = dict(params["datasets"][ARM_DATASET.get(arm, "synthetic")])
    if "root" in data:
        data["root"] = str(ROOT / data["root"])
    return synth, _merge(params["pretrain"], {**over, **quiet}), data


def prepared(data: dict, root: Path):
    """The arm's dataset as the prepare stage writes it (one cache per process and dataset)."""
    from finesyn.config import DatasetConfig
    from finesyn.data.prepare import prepare_dataset
    from finesyn.data.prepared import open_cache

    name = "synthetic" if data["kind"] == "synthetic" else Path(data["root"]).name
    if data["kind"] != "synthetic" and not Path(data["root"]).is_dir():
        raise SystemExit(f"{data['root']} is missing: build it first (python -m studies.{name} --out {data['root']})")
    out = root / f"prepared-{name}"
    if not (out / "meta.json").is_file():
        prepare_dataset(name, DatasetConfig(**data), out)
    return open_cache(out)


def oracle_pairs(ds, data: dict, fit: np.ndarray, cfg, crop: int, seed: int):
    """The oracle arm's pair module: ORACLE_RENDERS re-renderings of every pretraining image, each with
    the scene and light of another pretraining image drawn by the run's seed (finesyn.pairs.oracle)."""
    from finesyn.config import DatasetConfig
    from finesyn.data.synthetic import GeneratorSettings, render_with_scene_of
    from finesyn.pairs.oracle import OraclePairs

    settings = GeneratorSettings.from_config(DatasetConfig(**data))
    split_index = np.array([int(ds.ids[i].rsplit("-", 1)[1]) for i in fit])  # synthetic-train-000123
    rng = np.random.default_rng([seed, 9001])
    donors = (np.arange(len(fit))[:, None] + rng.integers(1, len(fit), (len(fit), ORACLE_RENDERS))) % len(fit)  # never itself
    twins = np.empty((len(fit), ORACLE_RENDERS, *ds.images.shape[1:]), np.uint8)
    for start in range(0, len(fit), 256):
        for t in range(ORACLE_RENDERS):
            rows = slice(start, start + 256)
            twins[rows, t] = render_with_scene_of("train", split_index[rows], split_index[donors[rows, t]], settings)
    rows_of = np.full(len(ds.images), -1)
    rows_of[fit] = np.arange(len(fit))
    return OraclePairs(twins, rows_of, cfg.augment, crop, cfg.synth.pair_fraction)


def run(arm: str, seed: int, tmp: Path) -> dict:
    from finesyn.config import PretrainConfig
    from finesyn.eval.features import extract_features
    from finesyn.eval.knn import knn_accuracy
    from finesyn.eval.monitor import carve_validation
    from finesyn.eval.paired import ids_digest
    from finesyn.eval.probe import lbfgs_probe
    from finesyn.eval.retrieval import retrieval_metrics
    from finesyn.pairs.health import end_of_run_health
    from finesyn.provenance import code_version, cpuinfo
    from finesyn.train import RunSpec, pretrain

    synth, pre, data = settings(arm)
    cfg = PretrainConfig(**pre)
    ds = prepared(data, tmp)
    crop, k = data["crop_size"], len(ds.classes)
    train, test = ds.indices("train"), ds.indices("test")
    fit, _ = carve_validation(train, ds.labels, cfg.monitor_val_fraction, data.get("split_seed", 0))
    pairs = oracle_pairs(ds, data, fit, cfg, crop, seed) if arm in ORACLE_ARMS else None
    t0 = time.perf_counter()
    spec = RunSpec(ARM_METHOD.get(arm, "mocov2"), synth, cfg, crop, seed, f"study-{arm}-{seed}", tmp / f"{arm}-{seed}")
    result = pretrain(ds.images, spec, fit, labels=ds.labels, pair_module=pairs)
    train_s = time.perf_counter() - t0
    ftr, fte = (extract_features(result.backbone, ds.images, idx, crop) for idx in (train, test))
    ytr, yte = ds.labels[train], ds.labels[test]
    probe = lbfgs_probe(ftr, ytr, fte, yte, num_classes=k, seed=seed)
    ret = retrieval_metrics(fte, yte, ks=(1,))
    knn = knn_accuracy(ftr, ytr, fte, yte, ks=(20,))
    row = {
        "arm": arm,
        "seed": seed,
        "linear_top1": probe["top1"],
        "mAP": ret["mAP"],
        "rank1": ret["rank1"],
        "knn20_top1": knn["top1_k20"],
        "test_hits": {**probe["test_hits"], "ids_digest": ids_digest(np.asarray(ds.ids)[test])},
        "n_test": int(len(test)),
        "steps": result.steps,
        "train_s": round(train_s, 1),
        "module": synth,
        "overrides": ARMS[arm][1],
        "method": ARM_METHOD.get(arm, "mocov2"),
        "dataset": ARM_DATASET.get(arm, "synthetic"),
        "code_version": os.environ.get("FINESYN_CODE_VERSION") or code_version(),
        "threads": torch.get_num_threads(),
        "machine": cpuinfo().get("cpu_model"),
    }
    if synth and arm not in ORACLE_ARMS:  # the oracle has no decoder to check
        row["health"] = end_of_run_health(result, ds.images, ds.labels, train, test, cfg, crop, k)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studies.module_study", description=__doc__.split("\n")[0])
    ap.add_argument("--stage", type=int, choices=sorted(STAGES), default=1, help="the protocol's stage: its arms, seeds and rows file")
    ap.add_argument("--arms", help="comma-separated; default: the stage's")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: the stage's")
    ap.add_argument("--shard", default="0/1", help="i/n: every n-th (seed, arm) pair from the i-th (parallel processes)")
    ap.add_argument("--out", type=Path, help="rows file; default: the stage's")
    ap.add_argument("--analyse", action="store_true", help="print the protocol's contrasts over the rows in --out")
    a = ap.parse_args(argv)
    arms, seeds, rows = STAGES[a.stage]
    a.arms, a.seeds, a.out = a.arms or ",".join(arms), a.seeds or seeds, a.out or rows
    if a.analyse:
        from studies.module_study_analysis import analyse

        if not a.out.is_file():
            print(f"{a.out}: no rows yet (python -m studies.module_study --stage {a.stage} writes them)")
            return 1

        print(analyse(a.out, a.stage))
        return 0
    torch.set_num_threads(1)
    done = {(r["arm"], r["seed"]) for r in map(json.loads, a.out.read_text().splitlines())} if a.out.is_file() else set()
    jobs = [(arm, seed) for seed in a.seeds for arm in a.arms.split(",") if (arm, seed) not in done]
    run_shard(my_share(jobs, a.shard), a.out, run, ("arm", "seed", "linear_top1", "mAP", "knn20_top1", "train_s"), "finesyn-module-study-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What every benchmark shares: the run context, the two pretraining settings, timed pretraining
through `finesyn.train.pretrain` (step clock, FLOP counting and profiling of single steps),
subprocesses with their own peak RSS, and summary statistics."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
DEPS_DIR = ROOT / ".bench-deps"


# ----------------------------------------------------------------------------- run context
@dataclass(frozen=True)
class StepPlan:
    """How many steps of one timed run: `warmup` excluded, then `steps` measured.

    Full mode sizes the measured window by time: N = ceil(target_s / duration of the last
    warm-up step), clamped to [min_steps, max_steps], so a run costs about target_s whatever
    the machine's speed, and never fewer than min_steps samples for the median.
    """

    warmup: int
    min_steps: int
    max_steps: int
    target_s: float = 0.0

    def steps_for(self, warm_step_s: float) -> int:
        if self.target_s <= 0 or warm_step_s <= 0:
            return self.min_steps
        return int(min(self.max_steps, max(self.min_steps, math.ceil(self.target_s / warm_step_s))))

    def as_dict(self) -> dict:
        return {"warmup": self.warmup, "min_steps": self.min_steps, "max_steps": self.max_steps, "target_s": self.target_s}


@dataclass
class Context:
    quick: bool
    out: Path
    default_methods: tuple[str, ...]
    paper_methods: tuple[str, ...]
    retrieval_n: int
    deps_dir: Path = DEPS_DIR
    e2e_params: Path | None = None  # None: the copy keeps the real params.yaml
    shared: dict = field(default_factory=dict)  # results handed from one benchmark to the next
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def plan(self, setting: str) -> StepPlan:
        if self.quick:
            return StepPlan(warmup=1, min_steps=2, max_steps=2)
        # default: 0.45-1.5 s steps on 2 idle cores -> 5-14 samples; paper-like: 1.5-5 s steps -> 3-7 samples
        return (
            StepPlan(warmup=2, min_steps=5, max_steps=25, target_s=6.0)
            if setting == "default"
            else StepPlan(warmup=1, min_steps=3, max_steps=8, target_s=10.0)
        )


# ----------------------------------------------------------------------------- settings
@dataclass
class Setting:
    name: str
    cfg: Any  # finesyn.config.PretrainConfig
    image_size: int
    crop: int
    num_train: int  # the training-set size (MoCo's queue is not capped to it)
    source: str

    def describe(self) -> dict:
        c = self.cfg
        return {
            "source": self.source,
            "backbone": c.backbone,
            "stem": c.stem,
            "image_size": self.image_size,
            "crop_size": self.crop,
            "batch_size": c.batch_size,
            "num_train": self.num_train,
            "threads": c.threads,
            "device": c.device,
            "methods": c.methods.model_dump(mode="json"),
            "alpha": c.alpha,
            "nu": c.nu,
            "synth": c.synth.model_dump(mode="json"),
            "augment": c.augment.model_dump(mode="json"),
        }


_BENCH_RUN = {"device": "cpu", "checkpoint_every_steps": 10**9, "log_every_steps": 10**6, "epochs": 1000, "init": "random"}


def default_setting(quick: bool) -> Setting:
    """params.yaml as it is (the default grid's first dataset gives the image and crop size)."""
    from finesyn.config import load_params

    p = load_params(ROOT / "params.yaml")
    ds = p.datasets[p.grid.datasets[0]]
    n_train = ds.num_classes * ds.train_per_class if ds.kind == "synthetic" else 5994
    cfg = p.pretrain.model_copy(update=_BENCH_RUN)
    size, crop = ds.image_size, ds.crop_size
    if quick:  # tiny: every code path, no meaningful number
        cfg = _tiny(cfg)
        size = crop = 32
        n_train = 160
    return Setting(
        "default",
        cfg,
        size,
        crop,
        n_train,
        "params.yaml (pretrain section, first grid dataset's image/crop size)" + (" shrunk for --quick" if quick else ""),
    )


def paper_setting(quick: bool) -> Setting:
    """params/paper.yaml scaled to the CPU: ResNet-50, 112 px crops (from 128 px images, the paper's
    224-from-256 ratio), batch 32, random init, blur sigma scaled with the crop (as params.yaml does
    for 64 px); 5,994 training images (CUB-200-2011's train split), as on CUB."""
    import yaml

    from finesyn.config import PretrainConfig

    raw = yaml.safe_load((ROOT / "params" / "paper.yaml").read_text())["pretrain"]
    raw.update(_BENCH_RUN, backbone="resnet50", batch_size=32)
    lo, hi = raw["augment"]["blur_sigma"]
    raw["augment"]["blur_sigma"] = [lo, hi * 112 / 224]
    cfg = PretrainConfig.model_validate(raw)
    size, crop, n_train = 128, 112, 5994
    if quick:
        cfg = _tiny(cfg, backbone="resnet50")
        size, crop, n_train = 40, 32, 160
    return Setting(
        "paper",
        cfg,
        size,
        crop,
        n_train,
        "params/paper.yaml scaled to the CPU (resnet50, 112 px crops of 128 px images, batch 32)"
        + (" shrunk for --quick" if quick else ""),
    )


def _tiny(cfg, backbone: str = "resnet18"):
    tiny = {"proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 32}  # every method's head widths, whichever it has
    m = cfg.methods.model_copy(
        update={
            name: sub.model_copy(update={k: v for k, v in tiny.items() if k in type(sub).model_fields})
            for name, sub in ((n, getattr(cfg.methods, n)) for n in type(cfg.methods).model_fields)
        }
    )
    synth = cfg.synth.model_copy(update={"decoder_width": 32})
    return cfg.model_copy(update={"backbone": backbone, "batch_size": 8, "methods": m, "synth": synth})


class TiledImages:
    """`num` random uint8 images (N, S, S, 3) backed by `base` distinct ones (row i is base[i % len(base)]).

    `pretrain` only indexes rows, so the training set can be as large as a setting needs
    without holding it in memory.
    """

    def __init__(self, size: int, num: int, base: int = 128, seed: int = 0):
        self.base = np.random.default_rng(seed).integers(0, 256, (min(base, num), size, size, 3), dtype=np.uint8)
        self.num = num
        self.shape = (num, size, size, 3)

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, idx):
        return self.base[np.asarray(idx) % len(self.base)]


# ----------------------------------------------------------------------------- whole runs on the default's data
# What the learning parity check (parity.py) trains and scores; the learning studies (studies/learning.py and the
# scripts built on it) reuse these, so a study depends on the benchmarks, never the other way round.

# The default's data as in params.yaml (the embedded synthetic dataset); `default_dataset(data)` overrides these keys.
DEFAULT_DATA = {"num_classes": 10, "train_per_class": 200, "test_per_class": 100, "image_size": 64, "seed": 0}


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with `over` merged in, dicts recursively (neither is modified)."""
    import copy

    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def default_pretrain_config(overrides: dict, base: dict | None = None):
    """params.yaml's `pretrain` section deep-merged with `base`, then `overrides` (validated like the pipeline's);
    checkpoints and step logs off."""
    import yaml

    from finesyn.config import PretrainConfig

    raw = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text())["pretrain"], base or {})
    return PretrainConfig(**deep_merge(raw, {**overrides, "checkpoint_every_steps": 10**9, "log_every_steps": 10**9}))


_DATA_CACHE: dict[str, Any] = {}


def default_dataset(data: dict):
    """The synthetic dataset of `DEFAULT_DATA` with `data`'s keys overridden (generated once per process)."""
    from finesyn.data.synthetic import GeneratorSettings, generate_synthetic

    key = json.dumps({**DEFAULT_DATA, **data}, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = generate_synthetic(GeneratorSettings(**{**DEFAULT_DATA, **data}))
    return _DATA_CACHE[key]


def probe_scores(backbone, ds, crop: int) -> dict:
    """Test top-1 (%) of the pipeline's L-BFGS linear probe and kNN-20 on `backbone`'s features of `ds`."""
    from finesyn.eval.features import extract_features
    from finesyn.eval.knn import knn_accuracy
    from finesyn.eval.probe import lbfgs_probe

    tr, te = np.nonzero(ds.split == "train")[0], np.nonzero(ds.split == "test")[0]
    ftr = extract_features(backbone, ds.images, tr, crop)
    fte = extract_features(backbone, ds.images, te, crop)
    k = len(ds.class_names)
    lin = lbfgs_probe(ftr, ds.labels[tr], fte, ds.labels[te], num_classes=k)
    knn = knn_accuracy(ftr, ds.labels[tr], fte, ds.labels[te], ks=(20,))
    return {"linear_top1": round(lin["top1"], 2), "knn20_top1": round(knn["top1_k20"], 2)}


# ----------------------------------------------------------------------------- timed pretraining
class _Done(Exception):
    """Raised from the progress callback once every planned step has run."""


@dataclass
class StepRecord:
    warmup: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)
    first_step_s: float = 0.0  # from the call to the end of step 1 (model build + first step)
    flops: int | None = None
    profile_table: str | None = None
    profile_top: list[dict] | None = None
    extra_measured: list[float] = field(default_factory=list)  # the `between` callback's own timings


def timed_pretrain(
    setting: Setting,
    method: str,
    synth: bool,
    plan: StepPlan,
    *,
    count_flops: bool = False,
    profile: bool = False,
    views: Callable | None = None,
    between: Callable[[int], float] | None = None,
) -> StepRecord:
    """Run `finesyn.train.pretrain` for warm-up + measured steps (+1 FLOP-counted step, +1 profiled step).

    The clock is the trainer's `progress` callback, called once after each optimiser step, so a
    step's time is everything the trainer does for it (batch gather, augmentation unless `views`
    replaces it, forward, backward, optimiser, momentum update). `between(step)` (optional) runs
    inside the callback after each step -- a peer's step, interleaved so both see the same machine
    load -- and returns its own duration; its time is excluded from ours.
    The FLOP-counted and profiled steps come after the measured window and are not timed.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from finesyn.train import RunSpec, pretrain

    rec = StepRecord()
    images = TiledImages(setting.image_size, setting.num_train)
    state: dict = {"n": None, "mode": None, "prof": None}
    spe = setting.num_train // setting.cfg.batch_size
    # an epoch end writes a checkpoint: keep the whole run inside the first epoch
    limit = spe - plan.warmup - 3
    if limit < plan.min_steps:
        raise ValueError(f"{setting.name}: {setting.num_train} training images give {spe} steps per epoch, too few for {plan}")

    def close_modes() -> None:
        if state["mode"] is not None:
            state["mode"].__exit__(None, None, None)
            state["mode"] = None
        if state["prof"] is not None:
            state["prof"].__exit__(None, None, None)
            state["prof"] = None

    t_start = time.perf_counter()
    clock = {"t": t_start}

    def progress(step: int, total: int) -> None:
        now = time.perf_counter()
        dt = now - clock["t"]
        w = plan.warmup
        if step == 1:
            rec.first_step_s = dt
        if step <= w:
            rec.warmup.append(dt)
            if step == w:
                state["n"] = min(plan.steps_for(dt), limit)
        elif state["n"] is not None and step <= w + state["n"]:
            rec.measured.append(dt)
        n = state["n"] if state["n"] is not None else 0
        if between is not None and step <= w + n:
            peer_dt = between(step)
            if step > w:
                rec.extra_measured.append(peer_dt)
        # single instrumented steps after the measured window
        after = w + n
        if state["mode"] is not None:  # the counted step just ended
            state["mode"].__exit__(None, None, None)
            rec.flops = int(state["mode"].get_total_flops())
            state["mode"] = None
        if state["prof"] is not None:
            state["prof"].__exit__(None, None, None)
            ka = state["prof"].key_averages()
            rec.profile_table = ka.table(sort_by="self_cpu_time_total", row_limit=30)
            rec.profile_top = _top_ops(ka)
            state["prof"] = None
        if state["n"] is not None:
            if step == after and count_flops:
                state["mode"] = FlopCounterMode(display=False)
                state["mode"].__enter__()
            elif step == after + int(count_flops) and profile:
                state["prof"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                state["prof"].__enter__()
            elif step >= after + int(count_flops) + int(profile):
                raise _Done
        clock["t"] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="finesyn-bench-") as ckpt, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recorded in the settings instead
        spec = RunSpec(method, synth, setting.cfg, setting.crop, 0, f"bench-{method}-{synth}", Path(ckpt))
        try:
            pretrain(images, spec, np.arange(setting.num_train), progress=progress, views=views)
        except _Done:
            pass
        finally:
            close_modes()
    return rec


def _top_ops(ka, n: int = 12) -> list[dict]:
    total = sum(e.self_cpu_time_total for e in ka) or 1
    rows = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [
        {
            "op": e.key,
            "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3),
            "self_cpu_pct": round(100 * e.self_cpu_time_total / total, 2),
            "calls": e.count,
        }
        for e in rows
    ]


# ----------------------------------------------------------------------------- statistics
def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "mean": None, "min": None, "max": None, "values": []}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "values": [round(v, 5) for v in values],
    }


def target(tid: str, description: str, measured: float | None, threshold: float, comparison: str, unit: str = "", **where) -> dict:
    """One target of the issue, next to its measured value: passed is None when nothing was measured."""
    ok = None
    if measured is not None and not (isinstance(measured, float) and math.isnan(measured)):
        ok = measured <= threshold if comparison == "<=" else measured >= threshold
    return {
        "id": tid,
        "description": description,
        "measured": measured,
        "threshold": threshold,
        "comparison": comparison,
        "unit": unit,
        "passed": ok,
        **where,
    }


# ----------------------------------------------------------------------------- subprocesses
def run_measured(cmd: list[str], cwd: Path | None = None, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run `cmd`, returning wall time, exit code, output and its peak RSS (ru_maxrss of the process
    and the descendants it waited for), taken by the small `_peak_rss.py` wrapper: a process forked
    straight from this one would inherit our own resident size as its floor."""
    with tempfile.TemporaryDirectory(prefix="finesyn-bench-rss-") as tmp:
        res_file = Path(tmp) / "rss.json"
        wrapped = [sys.executable, "-S", str(BENCH_DIR / "_peak_rss.py"), str(res_file), "--", *cmd]
        t0 = time.perf_counter()
        # own session: on a timeout the wrapper and everything it started are ended together
        proc = subprocess.Popen(
            wrapped, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            stdout, stderr = proc.communicate()
            timed_out = True
        rc = proc.returncode
        wall = time.perf_counter() - t0
        rss = json.loads(res_file.read_text())["peak_rss_kib"] / 1024 if res_file.is_file() else None
    return {
        "cmd": cmd,
        "returncode": rc,
        "wall_s": round(wall, 3),
        "peak_rss_mib": round(rss, 1) if rss is not None else None,
        "stdout": stdout,
        "stderr": stderr,
        "timed_out": timed_out,
    }


def tool_env() -> dict:
    """The venv's tools first on PATH (dvc, python), no analytics, quiet warnings."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore"}

"""Peak RSS (and wall time) of every pipeline stage run as a subprocess (issue 9, item 4).

The stages are the real `stages/*.py` CLIs, in dvc.yaml's order, on a tiny synthetic dataset
prepared in a temporary directory (the `prepare` stage makes it) with the real params.yaml
otherwise: in full mode the default model and batch (ResNet-18, 64 px, batch 64) over 2 steps,
so `pretrain`'s peak is that of a default step; in quick mode everything is shrunk. One trained
experiment (MoCo v2 + module: the largest default step) goes through every stage.
Each stage's peak RSS comes from wait4() on that process alone (common.run_measured).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import ROOT, Context, run_measured, tool_env

EXPERIMENT = "mocov2_synth"


def tiny_params(quick: bool) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    ds = next(iter(raw["grid"]["datasets"]))
    raw["grid"] = {"datasets": [ds], "experiments": [EXPERIMENT], "seeds": [0]}
    pre = raw["pretrain"]
    pre.update(epochs=1, checkpoint_every_steps=1000, device="cpu")
    if quick:
        raw["datasets"][ds].update(num_classes=4, train_per_class=12, test_per_class=6, image_size=32, crop_size=32)
        pre.update(batch_size=16)
        pre["methods"]["mocov2"].update(proj_hidden_dim=32, proj_dim=16)
        pre["synth"]["decoder_width"] = 32
        raw["probe"].update(l2_grid=[1e-4, 1e-2], max_iter=50)
        raw["retrieve"]["knn_ks"] = [5]
    else:  # default model, image size and batch; 4 x 32 training images = 2 steps
        raw["datasets"][ds].update(num_classes=4, train_per_class=32, test_per_class=16)
        raw["retrieve"]["knn_ks"] = [5, 20]
    return raw


def commands(ds: str) -> list[tuple[str, list[str]]]:
    s = lambda name: str(ROOT / "stages" / f"{name}.py")  # noqa: E731
    run = f"{ds}/{EXPERIMENT}/seed0"
    return [
        ("validate", [s("validate"), "--out", "reports/params.resolved.json"]),
        ("prepare", [s("prepare"), "--dataset", ds, "--out", f"data/prepared/{ds}"]),
        (
            "pretrain",
            [
                s("pretrain"),
                "--dataset",
                ds,
                "--experiment",
                EXPERIMENT,
                "--seed",
                "0",
                "--data",
                f"data/prepared/{ds}",
                "--out",
                f"models/{run}",
                "--checkpoints",
                f"checkpoints/{run}",
            ],
        ),
        (
            "extract",
            [s("extract"), "--dataset", ds, "--data", f"data/prepared/{ds}", "--model", f"models/{run}", "--out", f"features/{run}.npz"],
        ),
        (
            "probe",
            [
                s("probe"),
                "--seed",
                "0",
                "--dataset",
                ds,
                "--features",
                f"features/{run}.npz",
                "--data",
                f"data/prepared/{ds}",
                "--model",
                f"models/{run}",
                "--out",
                f"metrics/{run}/probe.json",
            ],
        ),
        ("retrieve", [s("retrieve"), "--seed", "0", "--features", f"features/{run}.npz", "--out", f"metrics/{run}/retrieval.json"]),
        (
            "report",
            [
                s("report"),
                "--metrics",
                "metrics",
                "--features",
                "features",
                "--models",
                "models",
                "--data",
                "data/prepared",
                "--resolved",
                "reports/params.resolved.json",
                "--out",
                "reports",
            ],
        ),
    ]


# dvc.yaml's dependency order: stages within a wave do not depend on each other
WAVES = (("validate", "prepare"), ("pretrain",), ("extract",), ("probe", "retrieve"), ("report",))


def run(ctx: Context) -> dict:
    """Full mode runs the stages one at a time (their wall times are clean); quick mode runs each
    wave's independent stages side by side (only peak RSS is of interest there, and it is per process)."""
    from concurrent.futures import ThreadPoolExecutor

    raw = tiny_params(ctx.quick)
    ds = raw["grid"]["datasets"][0]
    d = raw["datasets"][ds]
    cmds = dict(commands(ds))
    results: dict[str, dict] = {}
    workers = 2 if ctx.quick else 1
    with tempfile.TemporaryDirectory(prefix="finesyn-bench-stages-") as tmp, ThreadPoolExecutor(workers) as pool:
        work = Path(tmp)
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        failed = None
        for wave in WAVES:
            if failed:
                for name in wave:
                    results[name] = {"stage": name, "status": "not run", "reason": f"{failed} failed"}
                continue
            for name, r in zip(
                wave, pool.map(lambda n: run_measured([sys.executable, *cmds[n]], cwd=work, env=tool_env(), timeout=900), wave)
            ):
                ok = r["returncode"] == 0
                results[name] = {
                    "stage": name,
                    "status": "ok" if ok else "error",
                    "returncode": r["returncode"],
                    "wall_s": r["wall_s"],
                    "peak_rss_mib": r["peak_rss_mib"],
                    **({} if ok else {"stderr_tail": r["stderr"][-1500:]}),
                }
                ctx.log(f"  stage {name}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB{'' if ok else ' FAILED'}")
                if not ok:
                    failed = failed or name
    return {
        "dataset": {
            "name": ds,
            "image_size": d["image_size"],
            "crop_size": d["crop_size"],
            "classes": d["num_classes"],
            "train": d["num_classes"] * d["train_per_class"],
            "test": d["num_classes"] * d["test_per_class"],
        },
        "experiment": EXPERIMENT,
        "pretrain": {k: raw["pretrain"][k] for k in ("backbone", "batch_size", "epochs")},
        "concurrent_within_wave": workers > 1,
        "stages": [results[name] for name in cmds],
        "rss_method": "ru_maxrss of each stage process (and the descendants it waited for), via benchmarks/_peak_rss.py",
        "status": "ok" if not failed else "error",
        **({"reason": f"stage {failed} failed"} if failed else {}),
    }

"""The TSVs `dvc plots show` draws: one file per logged term, holding every run of the grid that ran.

DVC plot definitions have no loops or globs, so dvc.yaml names fixed files, `reports/curves/train/<term>.tsv`
and `reports/curves/val/<metric>.tsv`, with columns `run` (`<dataset>/<experiment>/seed<k>`), `step` and
`value`; the template `.dvc/plots/runs.json` draws one line per run (and a dash style per revision in
`dvc plots diff`). Own data, extra seeds and ablations are overlaid without editing dvc.yaml.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from finesyn.config import Params
from finesyn.io import atomic_write_text
from finesyn.paths import RunPaths

HEADER = "run\tstep\tvalue\n"


def curve_name(part: str, stem: str) -> str:
    """`train/<term>` or `val/<metric>`; the monitor's kNN k leaves the name (val/knn20_top1 -> val/knn_top1),
    so a changed `pretrain.monitor_k` still lands in the file dvc.yaml names."""
    return part + "/" + re.sub(r"^knn\d+_", "knn_", stem)


def write_curve_files(params: Params, models_root: Path, dest: Path) -> list[Path]:
    """Every run's dvclive curves (models/<d>/<e>/seed<k>/live/plots/metrics/{train,val}/*.tsv) gathered per
    term into <dest>/<name>.tsv; files of terms no run of this grid logged are removed."""
    lines: dict[str, list[str]] = {}
    for d in params.grid.datasets:
        for e in params.grid.experiments:
            for seed in params.grid.seeds:
                live = RunPaths(d, e, seed).model_dir(models_root) / "live" / "plots" / "metrics"
                for tsv in sorted(live.glob("*/*.tsv")):
                    if tsv.parent.name not in ("train", "val"):
                        continue
                    with tsv.open(newline="") as f:
                        rows = [(r["step"], r[tsv.stem]) for r in csv.DictReader(f, delimiter="\t")]
                    name = curve_name(tsv.parent.name, tsv.stem)
                    lines.setdefault(name, []).extend(f"{d}/{e}/seed{seed}\t{step}\t{value}\n" for step, value in rows)
    written = [atomic_write_text(dest / f"{name}.tsv", HEADER + "".join(rows)) for name, rows in sorted(lines.items())]
    keep = {p.resolve() for p in written}
    for p in sorted(dest.rglob("*"), reverse=True) if dest.is_dir() else []:  # stale files and folders (an older layout too)
        if p.is_file() and p.resolve() not in keep:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return written

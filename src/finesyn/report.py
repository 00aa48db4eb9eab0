"""Results tables from the metrics files: rows = dataset × experiment, mean ± std over seeds.

Every row names the metrics files, params hashes and code version that produced it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from pathlib import Path

from finesyn.config import Params
from finesyn.io import atomic_write_text

COLUMNS = [  # (header, file, key path)
    ("linear top-1", "probe.json", ("top1",)),
    ("linear top-5", "probe.json", ("top5",)),
    ("Rank-1", "retrieval.json", ("rank1",)),
    ("Rank-5", "retrieval.json", ("rank5",)),
    ("mAP", "retrieval.json", ("mAP",)),
]


def columns(params: Params) -> list[tuple[str, str, tuple[str, ...]]]:
    return COLUMNS + [(f"kNN-{k}", "retrieval.json", ("knn", f"top1_k{k}")) for k in params.retrieve.knn_ks]


def _get(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def collect(params: Params, metrics_root: Path) -> list[dict]:
    """One row per (dataset, experiment) of the grid, with per-seed values and their sources."""
    rows = []
    for dataset in params.grid.datasets:
        for experiment in params.grid.experiments:
            row = {"dataset": dataset, "experiment": experiment, "values": {}, "sources": [], "seeds": []}
            for seed in params.grid.seeds:
                d = metrics_root / dataset / experiment / f"seed{seed}"
                files = {name: d / name for name in ("probe.json", "retrieval.json")}
                missing = [str(p) for p in files.values() if not p.is_file()]
                if missing:
                    raise FileNotFoundError(f"report: missing metrics {missing} (run the probe/retrieve stages)")
                loaded = {name: json.loads(p.read_text()) for name, p in files.items()}
                row["seeds"].append(seed)
                for header, name, path in columns(params):
                    v = _get(loaded[name], path)
                    if v is not None:
                        row["values"].setdefault(header, []).append(float(v))
                row["sources"].append(
                    {
                        "seed": seed,
                        "files": [str(p) for p in files.values()],
                        "params_hash": {n: loaded[n].get("params_hash") for n in loaded},
                        "encoder_run_id": loaded["probe.json"].get("encoder_run_id"),
                        "code_version": loaded["probe.json"].get("code_version"),
                        "protocol": {n: loaded[n].get("protocol") for n in loaded},
                    }
                )
            rows.append(row)
    return rows


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def chance_level(params: Params, dataset: str) -> float | None:
    cfg = params.datasets[dataset]
    return 100.0 / cfg.num_classes if cfg.kind == "synthetic" else None


def to_markdown(params: Params, rows: list[dict]) -> str:
    headers = [h for h, _, _ in columns(params)]
    out = ["# Results", ""]
    n_seeds = len(params.grid.seeds)
    out.append(
        f"Percent; {'mean ± sample std over ' + str(n_seeds) + ' seeds' if n_seeds > 1 else 'one seed'} "
        f"(seeds {list(params.grid.seeds)}). Linear probe: `{params.probe.protocol}` on L2-normalised frozen features, "
        f"L2 strength chosen on a validation split of train, final fit on all of train; retrieval: `{params.retrieve.protocol}`, "
        "cosine similarity, mAP over the full ranking; kNN: cosine, weighted vote. "
        "`random_init` is the same encoder with no training: SSL that does not beat it has learned nothing."
    )
    out.append("")
    for dataset in params.grid.datasets:
        chance = chance_level(params, dataset)
        out.append(f"## {dataset}" + (f" (chance: {chance:.1f}%)" if chance else ""))
        out.append("")
        out.append("| experiment | " + " | ".join(headers) + " |")
        out.append("|---" * (len(headers) + 1) + "|")
        for row in rows:
            if row["dataset"] != dataset:
                continue
            cells = [_fmt(row["values"][h]) if h in row["values"] else "–" for h in headers]
            out.append(f"| {row['experiment']} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("## Where each number comes from")
    out.append("")
    for row in rows:
        for src in row["sources"]:
            out.append(
                f"- {row['dataset']}/{row['experiment']} seed {src['seed']}: "
                + ", ".join(f"[{Path(f).name}]({Path('..') / f})" for f in src["files"])
                + f"; encoder run `{src['encoder_run_id']}`, params hashes {src['params_hash']}, code `{src['code_version']}`"
            )
    return "\n".join(out) + "\n"


def to_csv(params: Params, rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    headers = [h for h, _, _ in columns(params)]
    w.writerow(["dataset", "experiment", "n_seeds"] + [f"{h} mean" for h in headers] + [f"{h} std" for h in headers] + ["sources"])
    for row in rows:
        vals = [row["values"].get(h, []) for h in headers]
        means = [f"{statistics.mean(v):.4f}" if v else "" for v in vals]
        stds = [f"{statistics.stdev(v):.4f}" if len(v) > 1 else "" for v in vals]
        w.writerow([row["dataset"], row["experiment"], len(row["seeds"])] + means + stds + [";".join(f for s in row["sources"] for f in s["files"])])
    return buf.getvalue()


def print_table(params: Params, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    headers = [h for h, _, _ in columns(params)]
    for dataset in params.grid.datasets:
        chance = chance_level(params, dataset)
        t = Table(title=f"{dataset}" + (f" (chance {chance:.1f}%)" if chance else ""))
        t.add_column("experiment")
        for h in headers:
            t.add_column(h, justify="right")
        for row in rows:
            if row["dataset"] == dataset:
                t.add_row(row["experiment"], *[_fmt(row["values"][h]) if h in row["values"] else "–" for h in headers])
        Console().print(t)


def build_report(params: Params, metrics_root: Path, out: Path, log: logging.Logger) -> None:
    rows = collect(params, metrics_root)
    atomic_write_text(out / "results.md", to_markdown(params, rows))
    atomic_write_text(out / "results.csv", to_csv(params, rows))
    print_table(params, rows)
    log.info("wrote %s and %s", out / "results.md", out / "results.csv")


if __name__ == "__main__":  # `python -m finesyn.report`: print the tables of the current metrics
    from finesyn.config import load_params

    _params = load_params()
    print_table(_params, collect(_params, Path("metrics")))

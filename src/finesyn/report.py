"""Results tables and the HTML report from the metrics, features and models of the grid.

Tables: rows = dataset × experiment, mean ± std over seeds (reports/results.md, results.csv);
an ablation section for experiments that differ from a baseline only by `overrides`; optional
reference numbers (`report.reference_numbers`, a CSV: dataset, experiment, metric, value) shown
beside ours with the difference. Figures (finesyn.figures) go to reports/figures/ and are embedded
in reports/index.html, a single self-contained file. Every row names the metrics files, params
hashes and code version that produced it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
import os
import re
import statistics
from pathlib import Path

from finesyn.config import REFERENCE_METHODS, Params, ParamsError
from finesyn.drift import value_at
from finesyn.io import atomic_write_bytes, atomic_write_text

COLUMNS = [  # (header, file, key path)
    ("linear top-1", "probe.json", ("top1",)),
    ("linear top-5", "probe.json", ("top5",)),
    ("Rank-1", "retrieval.json", ("rank1",)),
    ("Rank-5", "retrieval.json", ("rank5",)),
    ("mAP", "retrieval.json", ("mAP",)),
]
TOP1 = "linear top-1"
GRADCAM_IMAGES = 6
GRADCAM_VIEWS = 8
FIG5_HINT = """experiments:
  mocov2_a001_nu0: {method: mocov2, synth: true, overrides: {alpha: 0.01, nu: 0.0}}
  mocov2_a005_nu0: {method: mocov2, synth: true, overrides: {alpha: 0.05, nu: 0.0}}
  mocov2_a02_nu0:  {method: mocov2, synth: true, overrides: {alpha: 0.2, nu: 0.0}}
  mocov2_a1_nu0:   {method: mocov2, synth: true, overrides: {alpha: 1.0, nu: 0.0}}
grid:
  experiments: [random_init, mocov2, mocov2_synth, mocov2_a001_nu0, mocov2_a005_nu0, mocov2_a02_nu0, mocov2_a1_nu0]"""


def columns(params: Params) -> list[tuple[str, str, tuple[str, ...]]]:
    return COLUMNS + [(f"kNN-{k}", "retrieval.json", ("knn", f"top1_k{k}")) for k in params.retrieve.knn_ks]


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
                row["n_test"] = loaded["probe.json"].get("n_test")
                for header, name, path in columns(params):
                    v = value_at(loaded[name], path)
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def chance_level(params: Params, dataset: str) -> float | None:
    cfg = params.datasets[dataset]
    return 100.0 / cfg.num_classes if cfg.kind == "synthetic" else None


# ----------------------------------------------------------------------------- experiment roles
def flatten_overrides(overrides: dict, prefix: str = "") -> dict[str, object]:
    """{"synth": {"criteria": ["variance"]}, "nu": 1.0} -> {"synth.criteria": ["variance"], "nu": 1.0}."""
    out: dict[str, object] = {}
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_overrides(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def format_overrides(overrides: dict) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in flatten_overrides(overrides).items())


def baseline_of(params: Params, method: str, synth: bool) -> str | None:
    """The grid experiment with this method and synth flag and no overrides (first in grid order)."""
    for e in params.grid.experiments:
        exp = params.experiments[e]
        if exp.method == method and exp.synth == synth and not exp.overrides:
            return e
    return None


def ablations(params: Params) -> list[dict]:
    """Grid experiments that differ from a baseline (same method and synth flag, no overrides) only
    by `overrides`: [{"experiment", "reference" (None if not in the grid), "overrides" (str)}]."""
    out = []
    for e in params.grid.experiments:
        exp = params.experiments[e]
        if exp.overrides:
            out.append(
                {"experiment": e, "reference": baseline_of(params, exp.method, exp.synth), "overrides": format_overrides(exp.overrides)}
            )
    return out


def module_pairs(params: Params) -> list[tuple[str, str]]:
    """(baseline, baseline + module) pairs in the grid, e.g. (mocov2, mocov2_synth)."""
    pairs = []
    for e in params.grid.experiments:
        exp = params.experiments[e]
        if exp.synth and not exp.overrides:
            base = baseline_of(params, exp.method, False)
            if base is not None:
                pairs.append((base, e))
    return pairs


def first_baseline(params: Params) -> str | None:
    """The encoder of Fig. 2: the first SSL baseline of the grid, MoCo v2 if there is one."""
    cands = [
        e
        for e in params.grid.experiments
        if params.experiments[e].method not in REFERENCE_METHODS and not params.experiments[e].synth and not params.experiments[e].overrides
    ]
    mocov2 = [e for e in cands if params.experiments[e].method == "mocov2"]
    return (mocov2 or cands or [None])[0]


def effective_settings(params: Params, resolved_path: Path | None) -> dict[str, dict]:
    """'<dataset>/<experiment>' -> effective pretrain settings: reports/params.resolved.json (the
    validate stage's record) when it exists, else computed the same way from params."""
    if resolved_path is not None and Path(resolved_path).is_file():
        runs = json.loads(Path(resolved_path).read_text()).get("runs", {})
        missing = [f"{d}/{e}" for d in params.grid.datasets for e in params.grid.experiments if f"{d}/{e}" not in runs]
        if missing:
            raise ParamsError(f"{resolved_path}: no settings for {missing} (stale: run the validate stage)")
        return runs
    from finesyn.run_identity import run_settings

    return {f"{d}/{e}": run_settings(params, d, e) for d in params.grid.datasets for e in params.grid.experiments}


# ----------------------------------------------------------------------------- reference numbers
def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def metric_aliases(params: Params) -> dict[str, str]:
    """Accepted metric names of a reference file -> column header ('top1', 'linear top-1', 'mAP', 'kNN-20', ...)."""
    out = {}
    for header, _, path in columns(params):
        out[_norm(header)] = header
        out[_norm(path[-1]) if path[0] != "knn" else _norm("knn" + path[-1])] = header
    return out


def load_reference_numbers(path: Path, params: Params) -> list[dict]:
    """Read `report.reference_numbers`: CSV with columns dataset, experiment, metric, value (extra
    columns such as `source` are kept). Any problem is an error naming the file and line."""
    path = Path(path)
    where = f"report.reference_numbers: {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{where}: cannot read ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    required = ("dataset", "experiment", "metric", "value")
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header or any(r not in header for r in required):
        raise ParamsError(f"{where}: the header must contain the columns {', '.join(required)} (got {header or 'an empty file'})")
    reader.fieldnames = header
    aliases = metric_aliases(params)
    out, seen = [], {}
    for i, raw in enumerate(reader, start=2):
        if None in raw:
            raise ParamsError(f"{where} line {i}: more fields than the header has")
        row = {k: (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        for k in ("dataset", "experiment", "metric"):
            if not row[k]:
                raise ParamsError(f"{where} line {i}: empty '{k}'")
        metric = aliases.get(_norm(row["metric"]))
        if metric is None:
            raise ParamsError(
                f"{where} line {i}: unknown metric {row['metric']!r}; use one of {sorted({h for h, _, _ in columns(params)})} (or top1, top5, rank1, rank5, map)"
            )
        try:
            value = float(row["value"])
        except ValueError:
            raise ParamsError(f"{where} line {i}: value {row['value']!r} is not a number") from None
        key = (row["dataset"], row["experiment"], metric)
        if key in seen:
            raise ParamsError(f"{where} line {i}: duplicate entry for {'/'.join(key)} (first on line {seen[key]})")
        seen[key] = i
        extra = {k: v for k, v in row.items() if k not in required and v}
        out.append(
            {"dataset": row["dataset"], "experiment": row["experiment"], "metric": metric, "value": value, "extra": extra, "line": i}
        )
    if not out:
        raise ParamsError(f"{where}: no rows")
    return out


def compare_reference(rows: list[dict], refs: list[dict]) -> list[dict]:
    """Each reference number with ours (mean ± std over seeds) and ours − reference."""
    index = {(r["dataset"], r["experiment"]): r for r in rows}
    out = []
    for ref in refs:
        row = index.get((ref["dataset"], ref["experiment"]))
        vals = row["values"].get(ref["metric"]) if row else None
        ours = _mean_std(vals) if vals else None
        out.append({**ref, "ours": ours, "ours_text": _fmt(vals) if vals else "–", "diff": (ours[0] - ref["value"]) if ours else None})
    return out


# ----------------------------------------------------------------------------- Markdown / CSV / console
def _protocol_text(params: Params) -> str:
    n_seeds = len(params.grid.seeds)
    return (
        f"Percent; {'mean ± sample std over ' + str(n_seeds) + ' seeds' if n_seeds > 1 else 'one seed'} "
        f"(seeds {list(params.grid.seeds)}). Linear probe: `{params.probe.protocol}` on L2-normalised frozen features, "
        f"L2 strength chosen on a validation split of train, final fit on all of train; retrieval: `{params.retrieve.protocol}`, "
        "cosine similarity, mAP over the full ranking; kNN: cosine, weighted vote. "
        "Reference rows: `random_init` is the same encoder with no training (SSL that does not beat it has learned nothing); "
        "`supervised` is the same encoder, views and number of steps trained with the labels (if it does not beat `random_init` either, "
        "the budget is too short for training to help, and the SSL rows say nothing about SSL)."
    )


def budget_check(params: Params, rows: list[dict], dataset: str) -> str | None:
    """One sentence on what the two reference rows say about the training (recipe and budget), or None when the
    grid lacks one of them. Users read tables, not logs: a budget too short for any training to help
    must be stated next to the numbers, not left to be inferred from them."""
    refs: dict[str, dict] = {}
    for r in rows:
        method = params.experiments[r["experiment"]].method
        if r["dataset"] == dataset and method in REFERENCE_METHODS and TOP1 in r["values"]:
            refs.setdefault(method, r)
    if set(refs) != set(REFERENCE_METHODS) or not refs["supervised"].get("n_test"):
        return None
    sup, rnd = refs["supervised"], refs["none"]
    s, r = (statistics.mean(x["values"][TOP1]) for x in (sup, rnd))
    n = sup["n_test"]
    margin = 2 * 100 * math.sqrt((s / 100) * (1 - s / 100) / n + (r / 100) * (1 - r / 100) / n)
    head = f"Budget check: `{sup['experiment']}` {s:.2f} vs `{rnd['experiment']}` {r:.2f} (linear top-1"
    if s - r > margin:
        return (
            f"{head}; +{s - r:.2f} points, more than two binomial standard errors, {margin:.2f}, on {n} test images): "
            "this training (its recipe and length) learns on this data, so the SSL rows can be read against both references."
        )
    return (
        f"{head}; the supervised row is not ahead by more than two binomial standard errors, {margin:.2f} points on {n} test images): "
        "even with the labels, this training (its recipe and length) does not learn on this data, so the SSL rows say nothing about SSL. "
        "Check the recipe first (this row uses the SSL rows' augmentation, optimiser and schedule), then whether the "
        "backbone resolves the detail that separates the classes, then the length."
    )


def _row_index(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["dataset"], r["experiment"]): r for r in rows}


def _cells(row: dict, headers: list[str]) -> list[str]:
    return [_fmt(row["values"][h]) if h in row["values"] else "–" for h in headers]


def _delta_top1(row: dict, ref_row: dict | None) -> str:
    if ref_row is None or TOP1 not in row["values"] or TOP1 not in ref_row["values"]:
        return "–"
    return f"{statistics.mean(row['values'][TOP1]) - statistics.mean(ref_row['values'][TOP1]):+.2f}"


def start_row_of(params: Params, experiment: str) -> str | None:
    """The untrained grid row a trained experiment starts from: method `none` with the same encoder
    (backbone, stem, pool, init), e.g. random_init, or an `init` row for a pretrained start."""
    if params.experiments[experiment].method == "none":
        return None
    cfg = params.pretrain_for(experiment)
    key = (cfg.backbone, cfg.stem, cfg.pool, cfg.init)
    for e in params.grid.experiments:
        if params.experiments[e].method == "none":
            c = params.pretrain_for(e)
            if (c.backbone, c.stem, c.pool, c.init) == key:
                return e
    return None


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Mean of the per-seed differences a_s − b_s with its two-sided 95 % Student-t interval
    (None for one seed: a single pair has no spread to estimate)."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    mean = statistics.mean(d)
    if len(d) < 2:
        return {"n": len(d), "mean": mean, "half_width": None}
    half = float(stats.t.ppf(0.975, len(d) - 1)) * statistics.stdev(d) / math.sqrt(len(d))
    return {"n": len(d), "mean": mean, "half_width": half}


def module_effects(params: Params, rows: list[dict]) -> list[dict]:
    """For every (baseline, baseline + module) pair and headline metric: the paired difference over seeds."""
    index = _row_index(rows)
    out = []
    for dataset in params.grid.datasets:
        for base, synth in module_pairs(params):
            rb, rs = index.get((dataset, base)), index.get((dataset, synth))
            if rb is None or rs is None or rb["seeds"] != rs["seeds"]:
                continue
            headline = [TOP1] + [f"kNN-{k}" for k in params.retrieve.knn_ks]
            for metric in [h for h in headline if h in rb["values"] and h in rs["values"]]:
                out.append(
                    {
                        "dataset": dataset,
                        "baseline": base,
                        "module": synth,
                        "metric": metric,
                        **paired_difference(rs["values"][metric], rb["values"][metric]),
                    }
                )
    return out


def _fmt_effect(e: dict) -> str:
    if e["half_width"] is None:
        return f"{e['mean']:+.2f} (1 seed: no interval)"
    return f"{e['mean']:+.2f} ± {e['half_width']:.2f} [{e['mean'] - e['half_width']:+.2f}, {e['mean'] + e['half_width']:+.2f}]"


def to_markdown(params: Params, rows: list[dict], refs: list[dict] | None = None) -> str:
    headers = [h for h, _, _ in columns(params)]
    index = _row_index(rows)
    out = ["# Results", "", _protocol_text(params), ""]
    for dataset in params.grid.datasets:
        chance = chance_level(params, dataset)
        out.append(f"## {dataset}" + (f" (chance: {chance:.1f}%)" if chance else ""))
        out.append("")
        out.append("| experiment | " + " | ".join(headers) + " | Δ top-1 vs start |")
        out.append("|---" * (len(headers) + 2) + "|")
        for row in rows:
            if row["dataset"] == dataset:
                start = start_row_of(params, row["experiment"])
                delta = f"{_delta_top1(row, index.get((dataset, start)))} (vs {start})" if start else "–"
                out.append(f"| {row['experiment']} | " + " | ".join(_cells(row, headers)) + f" | {delta} |")
        out.append("")
        out += [
            "Δ top-1 vs start: linear top-1 of the row minus that of the untrained row it started from (same encoder and init): "
            "what the training added.",
            "",
        ]
        check = budget_check(params, rows, dataset)
        if check:
            out += [check, ""]
    effects = module_effects(params, rows)
    if effects:
        out += [
            "## The module's effect",
            "",
            "Baseline + module − baseline, per seed, then the mean and its two-sided 95 % Student-t interval over the seeds "
            "(paired: the same seed's data order and initialisation on both sides).",
            "",
            "| dataset | module − baseline | metric | seeds | Δ mean ± 95 % half-width [interval] |",
            "|---|---|---|---|---|",
        ]
        out += [f"| {e['dataset']} | {e['module']} − {e['baseline']} | {e['metric']} | {e['n']} | {_fmt_effect(e)} |" for e in effects]
        out.append("")
    abl = ablations(params)
    if abl:
        out += [
            "## Ablations",
            "",
            "Experiments that differ from a baseline (same method, no overrides) only by `overrides`; Δ top-1 = theirs − the baseline's.",
            "",
        ]
        for dataset in params.grid.datasets:
            out.append(f"### {dataset}")
            out.append("")
            out.append("| experiment | baseline | overrides | " + " | ".join(headers) + " | Δ top-1 |")
            out.append("|---" * (len(headers) + 4) + "|")
            for a in abl:
                row = index[(dataset, a["experiment"])]
                ref = index.get((dataset, a["reference"])) if a["reference"] else None
                out.append(
                    f"| {a['experiment']} | {a['reference'] or '(not in grid)'} | {a['overrides']} | "
                    + " | ".join(_cells(row, headers))
                    + f" | {_delta_top1(row, ref)} |"
                )
            out.append("")
    if refs:
        out += ["## Reference numbers", "", f"From `{params.report.reference_numbers}`; difference = ours − reference.", ""]
        out.append("| dataset | experiment | metric | reference | ours | difference |")
        out.append("|---|---|---|---|---|---|")
        for c in refs:
            diff = f"{c['diff']:+.2f}" if c["diff"] is not None else "– (not in the grid)"
            out.append(f"| {c['dataset']} | {c['experiment']} | {c['metric']} | {c['value']:.2f} | {c['ours_text']} | {diff} |")
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
        w.writerow(
            [row["dataset"], row["experiment"], len(row["seeds"])]
            + means
            + stds
            + [";".join(f for s in row["sources"] for f in s["files"])]
        )
    return buf.getvalue()


def print_table(params: Params, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    headers = [h for h, _, _ in columns(params)]
    for dataset in params.grid.datasets:
        chance = chance_level(params, dataset)
        t = Table(title=f"{dataset}" + (f" (chance {chance:.1f}%)" if chance else ""))
        t.add_column("experiment", no_wrap=True)  # names are what users look up: never truncated
        for h in headers:
            t.add_column(h, justify="right")
        t.add_column("Δ top-1 vs start", justify="right")
        index = _row_index(rows)
        for row in rows:
            if row["dataset"] == dataset:
                start = start_row_of(params, row["experiment"])
                t.add_row(row["experiment"], *_cells(row, headers), _delta_top1(row, index.get((dataset, start))) if start else "–")
        console = Console()
        need = t.__rich_measure__(console, console.options.update(max_width=10_000)).maximum
        Console(width=max(console.width, need)).print(t)  # wider than the terminal beats truncated numbers
        check = budget_check(params, rows, dataset)
        if check:
            console.print(check, markup=False, highlight=False)
        for e in module_effects(params, rows):
            if e["dataset"] == dataset:
                console.print(
                    f"{e['module']} − {e['baseline']}, {e['metric']}: {_fmt_effect(e)} ({e['n']} seeds, paired)",
                    markup=False,
                    highlight=False,
                )


# ----------------------------------------------------------------------------- figures
class Figure(dict):
    """{"id", "section", "title", "caption", "path" (None when not drawn), "sources": [str]}."""


def _seed0(params: Params) -> int:
    return params.grid.seeds[0]


def fig_variance(params: Params, features_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn import figures
    from finesyn.artifacts import load_features

    exp = first_baseline(params)
    figs = []
    for dataset in params.grid.datasets:
        fid = f"fig2_variance_{dataset}"
        title = f"Fig. 2 analogue — {dataset}"
        if exp is None:
            figs.append(
                Figure(
                    id=fid,
                    section="fig2",
                    title=title,
                    path=None,
                    sources=[],
                    caption="Not drawn: the grid has no SSL baseline (an experiment with a method, synth: false and no overrides).",
                )
            )
            continue
        src = features_root / dataset / exp / f"seed{_seed0(params)}.npz"
        feats = load_features(src)
        x, y = feats["test_features"], feats["test_labels"]
        kind = str(feats.get("feature", "backbone"))
        fig, s = figures.variance_figure(x, y, f"{dataset}: {exp} (seed {_seed0(params)}), {len(y)} test images, {kind} features")
        path = figures.save_png(fig, fig_dir / f"{fid}.png")
        f = s["fisher"]
        caption = (
            f"Test features of the baseline encoder <b>{exp}</b> (seed {_seed0(params)}; extract.feature = {kind}). "
            f"Left: per-dimension variance over the {len(y)} test images, sorted (d = {len(s['var'])}). "
            f"Right: the two classes with the most test images (labels {s['pair'][0]} and {s['pair'][1]}) along the minimum-variance "
            f"dimension v_min = {s['j_min']}{' (lowest non-constant; ' + str(s['n_constant']) + ' constant dims excluded)' if s['n_constant'] else ''} "
            f"and the maximum-variance dimension v_max = {s['j_max']}, with a Gaussian KDE of each class on each axis. "
            f"The paper's claim is that classes separate along v_max, not along v_min; here the Fisher ratio "
            f"(squared mean difference / mean within-class variance) is {f['v_min']:.3f} along v_min and {f['v_max']:.3f} along v_max."
        )
        run = str(feats.get("encoder_run_id", ""))
        figs.append(Figure(id=fid, section="fig2", title=title, path=path, caption=caption, sources=[f"{src} (encoder run {run})"]))
        log.info("wrote %s", path)
    return figs


def _gradcam_indices(labels, test_idx, n: int):
    """n test images: the first test image of each class (in label order), then the next ones."""
    import numpy as np

    chosen = []
    for c in np.unique(labels[test_idx]):
        chosen.append(int(test_idx[np.flatnonzero(labels[test_idx] == c)[0]]))
        if len(chosen) == n:
            break
    for i in test_idx:
        if len(chosen) >= n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return np.array(sorted(chosen[:n]))


def fig_gradcam(params: Params, data_root: Path, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    import numpy as np
    import torch

    from finesyn import figures
    from finesyn.data.augment import denormalize, eval_view
    from finesyn.data.cache import open_cache
    from finesyn.eval.features import load_encoder

    pairs = module_pairs(params)
    seed = _seed0(params)
    figs = []
    for dataset in params.grid.datasets:
        fid = f"fig3_gradcam_{dataset}"
        title = f"Fig. 3 analogue — {dataset}"
        if not pairs:
            figs.append(
                Figure(
                    id=fid,
                    section="fig3",
                    title=title,
                    path=None,
                    sources=[],
                    caption="Not drawn: the grid needs a baseline and its +module experiment (e.g. mocov2 and mocov2_synth: same method, synth false/true, no overrides).",
                )
            )
            continue
        ds = open_cache(data_root / dataset)
        crop = params.datasets[dataset].crop_size
        idx = _gradcam_indices(ds.labels, ds.indices("test"), GRADCAM_IMAGES)
        raw = torch.from_numpy(np.ascontiguousarray(ds.images[idx]))
        x = eval_view(raw, crop)
        views = figures.augmented_views(raw, params.pretrain.augment, crop, GRADCAM_VIEWS, seed=0)
        cols, sources, layers = [], [f"{data_root / dataset} (test images {', '.join(ds.ids[i] for i in idx)})"], set()
        for base, mod in pairs:
            for exp in (base, mod):
                model_dir = models_root / dataset / exp / f"seed{seed}"
                backbone, _, state = load_encoder(model_dir)
                layer = figures.cam_layer(backbone, crop)
                layers.add(layer)
                cam = figures.ssl_gradcam(backbone, x, views, layer).numpy()
                cols.append((f"{exp}" + ("" if layer == "layer4" else f" ({layer})"), cam))
                sources.append(f"{model_dir / 'encoder.pt'} (run {state.get('run_id')})")
        images = denormalize(x).permute(0, 2, 3, 1).numpy()
        fig = figures.gradcam_figure(images, cols, f"{dataset}: SSL-induced Grad-CAM, seed {seed}")
        path = figures.save_png(fig, fig_dir / f"{fid}.png")
        layer_text = ", ".join(sorted(layers))
        low_res = (
            ""
            if layers == {"layer4"}
            else (
                f" At this input size ({crop} px) layer4's maps are smaller than 4×4, so the deepest block with maps at least 4×4 ({layer_text}) is used."
            )
        )
        caption = (
            f"Spatial Grad-CAM on {GRADCAM_IMAGES} test images (centre crops; one per class where possible), "
            f"baseline vs +module encoders ({'; '.join(f'{b} vs {m}' for b, m in pairs)}; seed {seed}). "
            f"The loss is L = −mean_k cos(f(x), f(v_k)) over {GRADCAM_VIEWS} views v_k of the same image made with the pretraining "
            "augmentation (fixed seed, no gradient through the views); channel weights = spatial mean of −∂L/∂A over the last conv block's "
            f"maps A; CAM = ReLU(Σ w·A), bilinearly upsampled, each map scaled to its own maximum (red = high).{low_res}"
        )
        figs.append(Figure(id=fid, section="fig3", title=title, path=path, caption=caption, sources=sources))
        log.info("wrote %s", path)
    return figs


def pair_experiments(params: Params) -> list[tuple[str, str]]:
    """(dataset, experiment) of the grid's runs that decode pairs (synth with ν > 0; α-only runs make none)."""
    return [
        (d, e)
        for d in params.grid.datasets
        for e in params.grid.experiments
        if params.experiments[e].synth and params.pretrain_for(e).nu != 0
    ]


def reconstruction_lines(params: Params, models_root: Path) -> list[str]:
    seed = _seed0(params)
    return [
        f"- {d}/{e} (seed {seed}): " + reconstruction_text(models_root / d / e / f"seed{seed}" / "train.json")
        for d, e in pair_experiments(params)
    ]


def reconstruction_text(train_json: Path) -> str:
    """One sentence on g(h)'s PSNR against the mean-image yardstick, from the pretrain stage's train.json."""
    rec = json.loads(train_json.read_text()).get("reconstruction") if train_json.is_file() else None
    if not rec:
        return f"No reconstruction PSNR: {train_json} has none (a run from before it was recorded: rerun its pretrain stage)."
    verdict = (
        "renders more than the mean image"
        if rec["gain_db"] >= 3
        else "does not beat the mean image by 3 dB: it renders little of the content"
    )
    return (
        f"Reconstruction on {rec['images']} test images ({rec['view']}): mean PSNR of g(h) {rec['psnr_db']:.2f} dB, of the mean "
        f"training image {rec['mean_image_psnr_db']:.2f} dB ({rec['gain_db']:+.2f} dB): g {verdict}."
    )


def fig_pairs(params: Params, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn import figures

    seed = _seed0(params)
    figs = []
    for dataset, exp in pair_experiments(params):
        src = models_root / dataset / exp / f"seed{seed}" / "pairs.png"
        fid = f"fig4_pairs_{dataset}_{exp}"
        title = f"Fig. 4 analogue — {dataset}, {exp}"
        if not src.is_file():
            figs.append(
                Figure(id=fid, section="fig4", title=title, path=None, sources=[str(src)], caption=f"Not drawn: {src} does not exist.")
            )
            continue
        path = figures.save_png(figures.pairs_figure(src.read_bytes(), f"{dataset}: {exp} (seed {seed})"), fig_dir / f"{fid}.png")
        recon_text, sources = reconstruction_text(src.parent / "train.json"), [str(src), str(src.parent / "train.json")]
        figs.append(
            Figure(
                id=fid,
                section="fig4",
                title=title,
                path=path,
                sources=sources,
                caption=(
                    f"Generated pairs of <b>{exp}</b> (seed {seed}) at the end of pretraining: the pretrain stage's pairs.png, enlarged (pixels unchanged). "
                    "Each row: the augmented input view, its reconstruction g(h), and g(h̃) decoded from the feature with the "
                    f"selected non-discriminative dimensions perturbed. The pair (g(h), g(h̃)) should differ only in non-discriminative content. {recon_text}"
                ),
            )
        )
        log.info("wrote %s", path)
    return figs


def fig_alpha(params: Params, rows: list[dict], settings: dict[str, dict], fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn import figures

    index = _row_index(rows)
    panels, used = [], []
    for dataset in params.grid.datasets:
        series: dict[str, list] = {}
        for e in params.grid.experiments:
            s = settings[f"{dataset}/{e}"]
            if s.get("synth") and float(s.get("nu", 1.0)) == 0.0 and TOP1 in index[(dataset, e)]["values"]:
                m, sd = _mean_std(index[(dataset, e)]["values"][TOP1])
                series.setdefault(s["method"], []).append((float(s["alpha"]), m, sd, e))
                used.append(f"{dataset}/{e}")
        if not series:
            continue
        lines = []
        for method in series:
            for synth, style in ((False, "--"), (True, ":")):
                e = baseline_of(params, method, synth)
                if e is None or TOP1 not in index[(dataset, e)]["values"]:
                    continue
                s = settings[f"{dataset}/{e}"]
                if synth and float(s.get("nu", 0)) == 0:
                    continue
                m, sd = _mean_std(index[(dataset, e)]["values"][TOP1])
                label = f"{e} (baseline, L_C)" if not synth else f"{e} (full: α={s['alpha']}, ν={s['nu']})"
                lines.append(
                    {
                        "label": label,
                        "value": m,
                        "std": sd if len(index[(dataset, e)]["values"][TOP1]) > 1 else None,
                        "style": style,
                        "method": method,
                    }
                )
                used.append(f"{dataset}/{e}")
        panels.append({"dataset": dataset, "series": [{"method": k, "points": v} for k, v in series.items()], "lines": lines})
    fid = "fig5_alpha"
    title = "Fig. 5 analogue — reconstruction alone (L_C + α·L_R)"
    if not panels:
        caption = (
            "Not drawn: the grid has no experiment with synth: true and ν = 0 (L_C + α·L_R only). Add a few, e.g. in params.yaml "
            "(experiment names must not contain '.', since DVC reads them as params paths):"
            f"<pre>{html.escape(FIG5_HINT)}</pre>"
        )
        return [Figure(id=fid, section="fig5", title=title, path=None, caption=caption, sources=[])]
    path = figures.save_png(figures.alpha_sweep_figure(panels), fig_dir / f"{fid}.png")
    caption = (
        f"Linear top-1 (mean ± std over seeds {list(params.grid.seeds)}) of encoders trained with L_C + α·L_R only (synth: true, ν = 0), "
        "against α; dashed: the baseline (L_C only); dotted: the full method (L_C + α·L_R + ν·L_Cp), shaded ± std. "
        "If the α-only points stay near the baseline while the full method is above it, reconstruction alone does not explain the gain. "
        f"Experiments: {', '.join(used)}; effective α and ν from reports/params.resolved.json; numbers from their metrics files (see Provenance)."
    )
    log.info("wrote %s", path)
    return [Figure(id=fid, section="fig5", title=title, path=path, caption=caption, sources=[f"metrics of {u}" for u in used])]


def fig_curves(params: Params, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn import figures

    figs = []
    for dataset in params.grid.datasets:
        curves, sources = {}, []
        for e in params.grid.experiments:
            for seed in params.grid.seeds:
                live = models_root / dataset / e / f"seed{seed}" / "live"
                c = figures.read_live_curves(live)
                if c:
                    curves.setdefault(e, {})[seed] = c
                    sources.append(str(live / "plots" / "metrics"))
        fid = f"curves_{dataset}"
        title = f"Training curves — {dataset}"
        if not curves:
            figs.append(
                Figure(id=fid, section="curves", title=title, path=None, sources=[], caption="Not drawn: no dvclive curves under models/.")
            )
            continue
        path = figures.save_png(figures.curves_figure(curves, f"{dataset}: training curves"), fig_dir / f"{fid}.png")
        figs.append(
            Figure(
                id=fid,
                section="curves",
                title=title,
                path=path,
                sources=sources,
                caption=(
                    "The learning monitor first (val/knn20_top1: kNN-20 top-1 of the validation images held out of the train split, "
                    "every pretrain.monitor_every_steps; never the test set), then every logged training term per step (dvclive, pretrain.log_every_steps): total loss, L_C (SSL loss), L_R (reconstruction, "
                    "module runs), L_Cp (SSL loss on the generated pair) and n_selected (number of perturbed dimensions); one colour per "
                    "experiment, one line style per seed. Experiments without training (method none) have no curves. "
                    "The same TSVs are mirrored to reports/curves/, declared as DVC plots: <code>dvc plots show</code>."
                ),
            )
        )
        log.info("wrote %s", path)
    return figs


def mirror_curves(params: Params, models_root: Path, dest: Path) -> list[Path]:
    """Copy every run's dvclive TSVs to <dest>/<dataset>/<experiment>/seed<k>/ unchanged: the directory
    dvc.yaml declares as plots (DVC plot definitions have no globs, and models/ holds non-plot files)."""
    written = []
    for dataset in params.grid.datasets:
        for e in params.grid.experiments:
            for seed in params.grid.seeds:
                src = models_root / dataset / e / f"seed{seed}" / "live" / "plots" / "metrics"
                run_dest = dest / dataset / e / f"seed{seed}"
                for tsv in sorted((src / "train").glob("*.tsv")):
                    written.append(atomic_write_bytes(run_dest / tsv.name, tsv.read_bytes()))
                for tsv in sorted((src / "val").glob("*.tsv")):  # the learning monitor
                    written.append(atomic_write_bytes(run_dest / "val" / tsv.name, tsv.read_bytes()))
    keep = {p.resolve() for p in written}
    if dest.is_dir():
        for p in sorted(dest.rglob("*"), reverse=True):  # files of runs no longer in the grid; then empty dirs
            if p.is_file() and p.resolve() not in keep:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return written


# ----------------------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px} th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child,td.l{text-align:left}
figure{margin:16px 0 28px} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:14px;color:#333;margin-top:6px}
.src{font-size:12px;color:#666} .note{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px}
.wide{overflow-x:auto} table.prov td{white-space:normal;word-break:break-all;font-size:12px} table.prov td.nw{white-space:nowrap;word-break:normal}
.row{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start} .row figure{max-width:380px;margin:8px 0}
code,pre{background:#f6f6f6;font-size:12px} pre{padding:8px;overflow-x:auto} .pos{color:#1a7f37} .neg{color:#b3261e}
"""


def _e(s) -> str:
    return html.escape(str(s))


def _md_code(text: str) -> str:
    """Escape, then render Markdown `code` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", _e(text))


def _anchor(dataset: str, experiment: str) -> str:
    return "src-" + re.sub(r"[^A-Za-z0-9_-]", "_", f"{dataset}-{experiment}")


def _tooltip(row: dict) -> str:
    return "; ".join(
        f"seed {s['seed']}: " + ", ".join(s["files"]) + f" (params {', '.join(f'{k}={v}' for k, v in s['params_hash'].items())})"
        for s in row["sources"]
    )


def _html_row(row: dict, headers: list[str], extra_before: list[str] = (), extra_after: list[str] = ()) -> str:
    link = f'<a href="#{_anchor(row["dataset"], row["experiment"])}">{_e(row["experiment"])}</a>'
    tip = _e(_tooltip(row))
    cells = "".join(f'<td title="{tip}">{_e(c)}</td>' for c in _cells(row, headers))
    return (
        "<tr><td>"
        + link
        + "</td>"
        + "".join(f'<td class="l">{c}</td>' for c in extra_before)
        + cells
        + "".join(f"<td>{c}</td>" for c in extra_after)
        + "</tr>"
    )


def _rel(path: str | Path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


SECTIONS = [
    ("fig2", "Fig. 2 analogue: feature variance and class separation"),
    ("fig3", "Fig. 3 analogue: spatial Grad-CAM, baseline vs +module"),
    ("fig4", "Fig. 4 analogue: generated pairs (input, g(h), g(h̃))"),
    ("fig5", "Fig. 5 analogue: linear top-1 vs α with reconstruction only"),
    ("curves", "Training curves"),
]


def to_html(
    params: Params, rows: list[dict], figs: list[Figure], out: Path, refs: list[dict] | None = None, settings: dict | None = None
) -> str:
    from finesyn.provenance import params_hash

    headers = [h for h, _, _ in columns(params)]
    index = _row_index(rows)
    code = sorted({str(s["code_version"]) for r in rows for s in r["sources"]})
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>finesyn report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>finesyn report</h1>",
        f"<p>Self-supervised fine-grained learning with synthesized pairs (re-implementation of Wang et al., ECCV 2024). "
        f"Grid: datasets {_e(list(params.grid.datasets))} × experiments {_e(list(params.grid.experiments))} × seeds {_e(list(params.grid.seeds))}; "
        f"code version {_e(', '.join(code))}; grid params hash <code>{params_hash(params.grid.model_dump(mode='json'))}</code>.</p>",
        f"<p>{_md_code(_protocol_text(params))} Hover a number for its metrics files and params hashes; the experiment name links to its provenance.</p>",
        '<nav><a href="#results">Results</a>'
        + (' · <a href="#ablations">Ablations</a>' if ablations(params) else "")
        + (' · <a href="#reference">Reference numbers</a>' if refs else "")
        + "".join(f' · <a href="#{sid}">{_e(t.split(":")[0])}</a>' for sid, t in SECTIONS)
        + ' · <a href="#provenance">Provenance</a></nav>',
        '<h2 id="results">Results</h2>',
    ]
    for dataset in params.grid.datasets:
        chance = chance_level(params, dataset)
        h.append(f"<h3>{_e(dataset)}" + (f" (chance: {chance:.1f}%)" if chance else "") + "</h3>")
        h.append("<table><tr><th>experiment</th>" + "".join(f"<th>{_e(c)}</th>" for c in headers) + "</tr>")
        h += [_html_row(r, headers) for r in rows if r["dataset"] == dataset]
        h.append("</table>")
        check = budget_check(params, rows, dataset)
        if check:
            h.append(f'<p class="check">{_md_code(check)}</p>')
    abl = ablations(params)
    if abl:
        h.append('<h2 id="ablations">Ablations</h2>')
        h.append(
            "<p>Experiments that differ from a baseline (same method and synth flag, no overrides) only by <code>overrides</code>; "
            "Δ top-1 = the experiment's linear top-1 − the baseline's (means over seeds).</p>"
        )
        for dataset in params.grid.datasets:
            h.append(f"<h3>{_e(dataset)}</h3>")
            h.append(
                '<div class="wide"><table><tr><th>experiment</th><th>baseline</th><th>overrides</th>'
                + "".join(f"<th>{_e(c)}</th>" for c in headers)
                + "<th>Δ top-1</th></tr>"
            )
            for a in abl:
                row = index[(dataset, a["experiment"])]
                ref = index.get((dataset, a["reference"])) if a["reference"] else None
                h.append(
                    _html_row(
                        row,
                        headers,
                        [_e(a["reference"] or "(not in grid)"), f"<code>{_e(a['overrides'])}</code>"],
                        [_e(_delta_top1(row, ref))],
                    )
                )
            h.append("</table></div>")
    if refs:
        h.append('<h2 id="reference">Reference numbers</h2>')
        h.append(
            f"<p>From <code>{_e(params.report.reference_numbers)}</code> (supplied by the user; nothing here is built in). Difference = ours − reference.</p>"
        )
        h.append(
            "<table><tr><th>dataset</th><th>experiment</th><th>metric</th><th>reference</th><th>ours</th><th>difference</th><th>note</th></tr>"
        )
        for c in refs:
            if c["diff"] is None:
                diff = "– (not in the grid)"
            else:
                diff = f'<span class="{"pos" if c["diff"] >= 0 else "neg"}">{c["diff"]:+.2f}</span>'
            exp = c["experiment"]
            exp_cell = f'<a href="#{_anchor(c["dataset"], exp)}">{_e(exp)}</a>' if (c["dataset"], exp) in index else _e(exp)
            note = _e("; ".join(f"{k}: {v}" for k, v in c["extra"].items()))
            h.append(
                f'<tr><td class="l">{_e(c["dataset"])}</td><td class="l">{exp_cell}</td><td class="l">{_e(c["metric"])}</td>'
                f'<td>{c["value"]:.2f}</td><td>{_e(c["ours_text"])}</td><td>{diff}</td><td class="l">{note}</td></tr>'
            )
        h.append("</table>")
    for sid, stitle in SECTIONS:
        h.append(f'<h2 id="{sid}">{_e(stitle)}</h2>')
        if sid == "fig4":
            h.append('<div class="row">')
        for f in (f for f in figs if f["section"] == sid):
            h.append(f'<figure id="{_e(f["id"])}"><h3>{_e(f["title"])}</h3>')
            if f["path"] is not None:
                h.append(_img_tag(f["path"], f["title"]))
            h.append(
                f"<figcaption>{'' if f['path'] is not None else '<div class=note>'}{f['caption']}{'' if f['path'] is not None else '</div>'}"
            )
            if f["path"] is not None:
                h.append(
                    f'<div class="src">File: <code>{_e(_rel(f["path"], out))}</code>.'
                    + (" Made from: " + "; ".join(f"<code>{_e(s)}</code>" for s in f["sources"]) if f["sources"] else "")
                    + "</div>"
                )
            h.append("</figcaption></figure>")
        if sid == "fig4":
            h.append("</div>")
    h.append('<h2 id="provenance">Provenance</h2>')
    h.append(
        "<p>Each row's numbers, per seed: the metrics files (links relative to this report), the params hash each records, "
        "the encoder run id and the code version. Effective pretrain settings of each run: <code>reports/params.resolved.json</code>.</p>"
    )
    h.append(
        '<div class="wide"><table class=prov><tr><th>dataset / experiment</th><th>seed</th><th>metrics files</th><th>params hash</th><th>encoder run</th><th>code</th></tr>'
    )
    protocols: dict[str, list[str]] = {}
    for row in rows:
        for i, s in enumerate(row["sources"]):
            first = f' id="{_anchor(row["dataset"], row["experiment"])}"' if i == 0 else ""
            links = "<br>".join(f'<a href="{_e(_rel(p, out))}">{_e(p)}</a>' for p in s["files"])
            hashes = "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in s["params_hash"].items())
            for k, v in s["protocol"].items():
                protocols.setdefault(f"{k}: {v}", []).append(f"{row['dataset']}/{row['experiment']}/seed{s['seed']}")
            h.append(
                f'<tr{first}><td class="l nw">{_e(row["dataset"])} / {_e(row["experiment"])}</td><td>{s["seed"]}</td><td class="l nw">{links}</td>'
                f'<td class="l nw">{hashes}</td><td class="l nw"><code>{_e(s["encoder_run_id"])}</code></td><td class="l"><code>{_e(s["code_version"])}</code></td></tr>'
            )
    h.append("</table></div>")
    h.append("<p>Evaluation protocols recorded in the metrics files:</p><ul>")
    for text, runs in protocols.items():
        h.append(f"<li>{_e(text)} <span class=src>({len(runs)} runs)</span></li>")
    h.append("</ul>")
    if settings:
        h.append(
            "<details><summary>Effective pretrain settings of each run (reports/params.resolved.json)</summary><pre>"
            + _e(json.dumps({k: settings[k] for k in sorted(settings)}, indent=1))
            + "</pre></details>"
        )
    h.append("</body></html>")
    return "\n".join(h) + "\n"


# ----------------------------------------------------------------------------- the stage
def build_figures(
    params: Params,
    rows: list[dict],
    settings: dict,
    fig_dir: Path,
    log: logging.Logger,
    *,
    features_root: Path,
    models_root: Path,
    data_root: Path,
) -> list[Figure]:
    figs = (
        fig_variance(params, features_root, fig_dir, log)
        + fig_gradcam(params, data_root, models_root, fig_dir, log)
        + fig_pairs(params, models_root, fig_dir, log)
        + fig_alpha(params, rows, settings, fig_dir, log)
        + fig_curves(params, models_root, fig_dir, log)
    )
    written = {Path(f["path"]).name for f in figs if f["path"] is not None}
    for stale in fig_dir.glob("*.png"):  # figures of datasets/experiments no longer in the grid
        if stale.name not in written:
            stale.unlink()
    return figs


def log_drift(params: Params, rows: list[dict], log: logging.Logger) -> None:
    """Say whether the metrics reproduce the committed ones (exactly, to rounding, or not)."""
    from finesyn import drift

    files = [Path(f) for row in rows for src in row["sources"] for f in src["files"]]
    text = drift.note(drift.compare(files, columns(params)))
    if text:
        log.info("%s", text)


def build_report(
    params: Params,
    metrics_root: Path,
    out: Path,
    log: logging.Logger,
    *,
    features_root: Path | None = None,
    models_root: Path | None = None,
    data_root: Path | None = None,
    resolved: Path | None = None,
) -> dict:
    """Tables always; figures and index.html when the features/models/data roots are given."""
    rows = collect(params, metrics_root)
    log_drift(params, rows, log)
    refs = None
    if params.report.reference_numbers is not None:
        refs = compare_reference(rows, load_reference_numbers(params.report.reference_numbers, params))
    recon = reconstruction_lines(params, models_root) if models_root is not None else []
    md = to_markdown(params, rows, refs)
    if recon:
        md += "\n## Fig. 4: does g(h) reconstruct its input?\n\n" + "\n".join(recon) + "\n"
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.csv", to_csv(params, rows))
    print_table(params, rows)
    for line in recon:
        log.info("Fig. 4 %s", line.removeprefix("- "))
    log.info("wrote %s and %s", out / "results.md", out / "results.csv")
    result = {"rows": rows, "refs": refs, "figures": []}
    if features_root is None or models_root is None or data_root is None:
        return result
    settings = effective_settings(params, resolved if resolved is not None else out / "params.resolved.json")
    for d in (out / "figures", out / "curves"):  # declared outputs: exist even when a grid draws nothing
        d.mkdir(parents=True, exist_ok=True)
    figs = build_figures(
        params, rows, settings, out / "figures", log, features_root=features_root, models_root=models_root, data_root=data_root
    )
    curves = mirror_curves(params, models_root, out / "curves")
    log.info("mirrored %d training-curve TSVs to %s (dvc plots show)", len(curves), out / "curves")
    atomic_write_text(out / "index.html", to_html(params, rows, figs, out, refs, settings))
    log.info("wrote %s (%d figures)", out / "index.html", sum(f["path"] is not None for f in figs))
    result["figures"] = figs
    return result


if __name__ == "__main__":  # `python -m finesyn.report`: print the tables of the current metrics
    from finesyn.config import load_params

    _params = load_params()
    _rows = collect(_params, Path("metrics"))
    print_table(_params, _rows)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log_drift(_params, _rows, logging.getLogger("finesyn.report"))

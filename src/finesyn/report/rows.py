"""The results rows: one per dataset x experiment, values per seed from the metrics files; deltas, the module's paired effect and the budget check."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TypedDict, cast

from finesyn.artifacts import read_json
from finesyn.config import REFERENCE_METHODS, Params
from finesyn.drift import value_at
from finesyn.paths import PROBE, RETRIEVAL, RunPaths
from finesyn.report.roles import module_pairs


class Source(TypedDict):
    """Where one seed's numbers of a row come from."""

    seed: int
    files: list[str]  # its probe.json, probe.meta.json, retrieval.json and retrieval.meta.json
    params_hash: dict[str, str | None]
    encoder_run_id: str | None
    code_version: str | None
    protocol: dict[str, str | None]


class Row(TypedDict, total=False):
    """One dataset x experiment of the results: each column's values, one per seed, and their sources."""

    dataset: str
    experiment: str
    values: dict[str, list[float]]  # column header -> per-seed values (a column a metrics file lacks is absent)
    sources: list[Source]
    seeds: list[int]
    n_test: int | None
    hits: list[dict | None]  # per seed: probe.meta.json's per-image top-1 hits (eval/paired.py), None where it has none


COLUMNS = [  # (header, metrics file, key path)
    ("linear top-1", PROBE, ("top1",)),
    ("linear top-5", PROBE, ("top5",)),
    ("Rank-1", RETRIEVAL, ("rank1",)),
    ("Rank-5", RETRIEVAL, ("rank5",)),
    ("mAP", RETRIEVAL, ("mAP",)),
]


TOP1 = "linear top-1"


def columns(params: Params) -> list[tuple[str, str, tuple[str, ...]]]:
    return COLUMNS + [(f"kNN-{k}", RETRIEVAL, ("knn", f"top1_k{k}")) for k in params.retrieve.knn_ks]


def _read_cell(cell: RunPaths, metrics_root: Path) -> tuple[dict[str, dict], dict[str, dict], list[Path]]:
    """(metrics file name -> its numbers, metrics file name -> its meta record, every file read) of one grid cell."""
    files = {PROBE: cell.probe(metrics_root), RETRIEVAL: cell.retrieval(metrics_root)}
    metas = {name: RunPaths.meta_of(path) for name, path in files.items()}
    missing = [str(p) for p in [*files.values(), *metas.values()] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"report: missing metrics {missing} (run the probe/retrieve stages)")
    numbers = {name: read_json(p) for name, p in files.items()}
    records = {name: read_json(p) for name, p in metas.items()}
    return numbers, records, [p for name in files for p in (files[name], metas[name])]


def collect(params: Params, metrics_root: Path) -> list[Row]:
    """One row per (dataset, experiment) of the grid: per-seed values from the metrics files, sources from their meta files."""
    rows = []
    for dataset in params.grid.datasets:
        for experiment in params.grid.experiments:
            row = Row(dataset=dataset, experiment=experiment, values={}, sources=[], seeds=[], hits=[])
            for seed in params.grid.seeds:
                numbers, records, read = _read_cell(RunPaths(dataset, experiment, seed), metrics_root)
                row["seeds"].append(seed)
                row["n_test"] = records[PROBE].get("n_test")
                row["hits"].append(records[PROBE].get("test_hits"))
                for header, name, path in columns(params):
                    v = value_at(numbers[name], path)
                    if v is not None:
                        row["values"].setdefault(header, []).append(float(v))
                row["sources"].append(
                    Source(
                        seed=seed,
                        files=[str(p) for p in read],
                        params_hash={n: records[n].get("params_hash") for n in records},
                        encoder_run_id=records[PROBE].get("encoder_run_id"),
                        code_version=records[PROBE].get("code_version"),
                        protocol={n: records[n].get("protocol") for n in records},
                    )
                )
            rows.append(row)
    return rows


NOT_PROPORTIONS = ("mAP",)  # a mean of per-query APs, not a share of test images: no binomial standard error


def binomial_se(percent: float, n: int) -> float:
    """Standard error, in points, of an accuracy of `percent` % on n independent test images: 100·√(p(1−p)/n)."""
    p = percent / 100
    return 100 * math.sqrt(p * (1 - p) / n)


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_and_error(row: Row, header: str) -> tuple[float, float | None]:
    """A cell's mean and its error bar: the sample std over seeds, or with one seed the binomial standard error
    (None for a single value that is not a share of test images, or whose test-set size is unknown)."""
    values = row["values"][header]
    if len(values) > 1:
        return _mean_std(values)
    n = row.get("n_test")
    return values[0], (binomial_se(values[0], n) if n and header not in NOT_PROPORTIONS else None)


def chance_level(params: Params, dataset: str) -> float | None:
    cfg = params.datasets[dataset]
    return 100.0 / cfg.num_classes if cfg.kind == "synthetic" else None


SE_TEXT = (
    ", so no spread over seeds: ± is the binomial standard error 100·√(p(1−p)/n) of an accuracy p on the n test images "
    "(the test set's share of the uncertainty only; mAP has none)"
)


def _protocol_text(params: Params) -> str:
    n_seeds = len(params.grid.seeds)
    return (
        f"Percent; {'mean ± sample std over ' + str(n_seeds) + ' seeds' if n_seeds > 1 else 'one seed'} "
        f"(seed{'s' if n_seeds > 1 else ''} {', '.join(map(str, params.grid.seeds))}){'' if n_seeds > 1 else SE_TEXT}. Linear probe: `{params.probe.protocol}` on L2-normalised frozen features, "
        f"L2 strength chosen on a validation split of train, final fit on all of train; retrieval: `{params.retrieve.protocol}`, "
        "cosine similarity, mAP over the full ranking; kNN: cosine, weighted vote. "
        "Reference rows: `random_init` is the same encoder with no training (SSL that does not beat it has learned nothing); "
        "`supervised` is the same encoder, augmentation and number of steps trained with the labels (if it does not beat `random_init` either, "
        "the budget is too short for training to help, and the SSL rows say nothing about SSL)."
    )


def budget_check(params: Params, rows: list[Row], dataset: str) -> str | None:
    """One sentence on what the two reference rows say about the training (recipe and budget), or None when the
    grid lacks one of them. Users read tables, not logs: a budget too short for any training to help
    must be stated next to the numbers, not left to be inferred from them."""
    verdict = budget_verdict(params, rows, dataset)
    return None if verdict is None else verdict[0]


def missing_references(params: Params, rows: list[Row], dataset: str) -> str | None:
    """Said loudly where a grid with SSL rows lacks a reference row (a sweep that dropped them): without both,
    nothing says whether this training learns at all. None where both are there or there is no SSL row."""
    present = {params.experiments[r["experiment"]].method for r in rows if r["dataset"] == dataset}
    if not present - set(REFERENCE_METHODS):
        return None
    missing = ["untrained row (method: none, e.g. `random_init`)" if m == "none" else "`supervised` row (method: supervised)"
               for m in REFERENCE_METHODS if m not in present]  # fmt: skip
    if not missing:
        return None
    return (
        f"No budget check: the grid has no {' and no '.join(missing)}, so nothing here says whether this training learns "
        "at all, and the SSL rows cannot be read as learning or not. Add the reference rows to grid.experiments."
    )


def _references(params: Params, rows: list[Row], dataset: str) -> tuple[Row, Row, float, float, int, float] | None:
    """(supervised row, untrained row, their linear top-1, test images, two binomial standard errors of the
    difference), or None when the grid lacks a reference row."""
    refs: dict[str, Row] = {}
    for row in rows:
        method = params.experiments[row["experiment"]].method
        if row["dataset"] == dataset and method in REFERENCE_METHODS and TOP1 in row["values"]:
            refs.setdefault(method, row)
    if set(refs) != set(REFERENCE_METHODS) or not refs["supervised"].get("n_test"):
        return None
    sup, rnd = refs["supervised"], refs["none"]
    s, r = (statistics.mean(x["values"][TOP1]) for x in (sup, rnd))
    n = cast(int, sup["n_test"])  # set (checked above)
    margin = 2 * 100 * math.sqrt((s / 100) * (1 - s / 100) / n + (r / 100) * (1 - r / 100) / n)
    return sup, rnd, s, r, n, margin


def _ceiling(untrained: float, margin: float) -> bool:
    """The untrained encoder leaves at most four binomial standard errors of the difference (two margins) to 100 %: a
    row leading it by one margin would have to be nearly perfect (digits-like data an untrained encoder scores ~95 on)."""
    return 100 - untrained <= 2 * margin


def no_headroom(params: Params, rows: list[Row], dataset: str) -> bool:
    """Whether the grid's untrained row leaves too little headroom for any row to lead it clearly (`_ceiling`)."""
    refs = _references(params, rows, dataset)
    return refs is not None and _ceiling(refs[3], refs[5])


def budget_verdict(params: Params, rows: list[Row], dataset: str) -> tuple[str, bool] | None:
    """(budget_check's sentence, whether the training learns: supervised ahead of random_init by more than
    two binomial standard errors), or None when the grid lacks a reference row."""
    refs = _references(params, rows, dataset)
    if refs is None:
        return None
    sup, rnd, s, r, n, margin = refs
    head = f"Budget check: `{sup['experiment']}` {s:.2f} vs `{rnd['experiment']}` {r:.2f} (linear top-1"
    if s - r > margin:
        return (
            f"{head}; +{s - r:.2f} points, more than two binomial standard errors, {margin:.2f}, on {n} test images): "
            "this training (its recipe and length) learns on this data, so the SSL rows can be read against both references."
        ), True
    short = f"{head}; the supervised row is not ahead by more than two binomial standard errors, {margin:.2f} points on {n} test images): "
    if _ceiling(r, margin):  # a ceiling, not a failure to train
        return (
            f"{short}the untrained encoder already scores {r:.2f}, leaving {100 - r:.2f} points, too little headroom for any "
            "training to show on this test set, so the SSL rows say nothing about SSL. Use harder data or more test images."
        ), False
    return (
        f"{short}even with the labels, this training (its recipe and length) does not learn on this data, so the SSL rows say "
        "nothing about SSL. Check the recipe first (this row uses the SSL rows' augmentation, optimiser and schedule), then whether "
        "the backbone resolves the detail that separates the classes, then the length."
    ), False


def _row_index(rows: list[Row]) -> dict[tuple[str, str], Row]:
    return {(r["dataset"], r["experiment"]): r for r in rows}


def _cell(row: Row, header: str) -> str:
    """Several seeds: mean ± sample std; one seed: the value ± its binomial standard error when it is a share of test images."""
    mean, error = mean_and_error(row, header)
    return f"{mean:.2f}" if error is None else f"{mean:.2f} ± {error:.2f}"


def _cells(row: Row, headers: list[str]) -> list[str]:
    return [_cell(row, h) if h in row["values"] else "–" for h in headers]


RETRIEVAL_CHECK = ("Rank-1", "mAP", "kNN-20")  # what invariance to non-discriminative content should improve


def not_above(row: Row, ref: Row | None) -> list[str]:
    """The RETRIEVAL_CHECK metrics on which `row` is not above `ref` (its untrained start)."""
    metrics = [m for m in RETRIEVAL_CHECK if ref is not None and m in row["values"] and m in ref["values"]]
    # metrics is empty without a ref
    return [m for m in metrics if statistics.mean(row["values"][m]) <= statistics.mean(cast(Row, ref)["values"][m])]


def retrieval_check(params: Params, rows: list[Row], dataset: str) -> str | None:
    """One sentence on each SSL row's retrieval and kNN against the untrained encoder it started from: linear
    top-1 alone can rise while the features get worse for retrieval (SSL that learned the nuisance). None
    when no SSL row has a start row in the grid."""
    index, notes = _row_index(rows), []
    for row in rows:
        start = start_row_of(params, row["experiment"])
        if row["dataset"] != dataset or start is None or params.experiments[row["experiment"]].method in REFERENCE_METHODS:
            continue
        ref = index.get((dataset, start))
        below = not_above(row, ref)
        if below:  # only with a ref
            assert ref is not None
            diffs = ", ".join(f"{m} {statistics.mean(row['values'][m]):.2f} vs {statistics.mean(ref['values'][m]):.2f}" for m in below)
            notes.append(f"`{row['experiment']}` is not above `{start}` on {diffs}")
    if not notes:
        return None
    return (
        "Retrieval check: " + "; ".join(notes) + ". Where an SSL row does not beat its untrained start on retrieval or kNN, "
        "its training has not made the features better at finding images of the same class, whatever its linear top-1."
    )


def _delta_top1(row: Row, ref_row: Row | None) -> str:
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


def module_effects(params: Params, rows: list[Row]) -> list[dict]:
    """For every (baseline, baseline + module) pair and headline metric: the paired difference over seeds;
    with one seed, linear top-1's over the test images (`per_image_difference`)."""
    index = _row_index(rows)
    out = []
    for dataset in params.grid.datasets:
        for base, synth in module_pairs(params):
            rb, rs = index.get((dataset, base)), index.get((dataset, synth))
            if rb is None or rs is None or rb["seeds"] != rs["seeds"]:
                continue
            headline = [TOP1] + [f"kNN-{k}" for k in params.retrieve.knn_ks]
            for metric in [h for h in headline if h in rb["values"] and h in rs["values"]]:
                effect = paired_difference(rs["values"][metric], rb["values"][metric])
                if metric == TOP1 and effect["n"] == 1:
                    effect = per_image_difference(rs, rb) or effect
                out.append({"dataset": dataset, "baseline": base, "module": synth, "metric": metric, **effect})
    return out


def per_image_difference(a: Row, b: Row) -> dict | None:
    """Linear top-1 of `a` minus `b` on the first seed's test images, paired per image (eval/paired.py);
    None where either probe record has no hits or they were scored on other test images."""
    from finesyn.eval.paired import paired_accuracy_difference, unpack_hits

    ha, hb = a.get("hits", [None])[0], b.get("hits", [None])[0]
    if not ha or not hb or ha.get("ids_digest") != hb.get("ids_digest") or ha["n"] != hb["n"]:
        return None
    d = paired_accuracy_difference(unpack_hits(ha), unpack_hits(hb))
    return {"n": 1, "mean": d["mean"], "half_width": d["half_width"], "over": "images", **{k: d[k] for k in ("n_images", "mcnemar_p")}}


def effect_verdict(e: dict) -> str:
    """The decision rules of docs/studies: an effect only where the 95 % interval lies above (below) 0; no
    effect of 1 point or more only where it lies inside (−1, +1); otherwise undecided."""
    what = f"{e['module']} − {e['baseline']} on {e['dataset']}, {e['metric']}: {_fmt_effect(e)}"
    if e["half_width"] is None:
        return f"{what}: one seed and no per-image hits, so no interval and no verdict."
    lo, hi = e["mean"] - e["half_width"], e["mean"] + e["half_width"]
    one_seed = e.get("over") == "images"
    if lo > 0:
        verdict = f"{'on this seed ' if one_seed else ''}the module helps (the interval lies above 0)"
    elif hi < 0:
        verdict = f"{'on this seed ' if one_seed else ''}the module hurts (the interval lies below 0)"
    elif -1 < lo and hi < 1:
        verdict = "no effect of 1 point or more (the interval lies inside ±1)"
    else:
        verdict = "undecided (the interval includes 0 and effects of 1 point or more)"
    scope = (
        "the test images' sampling only, one training seed: whether it holds over seeds is the module study's question"
        if one_seed
        else f"over {e['n']} training seeds"
    )
    return f"{what} ({scope}): {verdict}."


def headline(params: Params, rows: list[Row], dataset: str) -> str:
    """What the rows of one dataset show, in one sentence: does SSL beat its start (linear top-1, and on
    retrieval), does the module beat its baseline (with its interval). Opens results.md and index.html."""
    index, parts = _row_index(rows), []
    budget = budget_verdict(params, rows, dataset)
    if budget is not None and not budget[1]:
        if no_headroom(params, rows, dataset):
            return f"On {dataset}, the untrained encoder is already near 100 %: too little headroom for training to show, so the SSL rows say nothing."
        return f"On {dataset}, even the supervised row does not beat the untrained encoder: this budget does not train, so the SSL rows say nothing."
    for row in rows:
        exp, start = row["experiment"], start_row_of(params, row["experiment"])
        method = params.experiments[exp].method
        if row["dataset"] != dataset or start is None or method in REFERENCE_METHODS or params.experiments[exp].synth:
            continue
        delta = _delta_top1(row, index.get((dataset, start)))
        seeds = f"{len(row['seeds'])} seeds" if len(row["seeds"]) > 1 else f"seed {row['seeds'][0]}"
        worse = not_above(row, index.get((dataset, start)))
        retrieval = f", but not on {', '.join(worse)}" if worse else ", and on retrieval and kNN too"
        parts.append(
            f"`{exp}` {'beats' if delta.startswith('+') else 'does not beat'} `{start}` by {delta} linear top-1 ({seeds}){retrieval}"
        )
    for e in module_effects(params, rows):
        if e["dataset"] == dataset and e["metric"] == TOP1:
            parts.append(f"the module: `{e['module']}` − `{e['baseline']}` {_fmt_effect(e)}" + (" (one seed)" if e["n"] == 1 else ""))
    return f"On {dataset}: " + "; ".join(parts) + "." if parts else f"On {dataset}: no SSL row with its untrained start in the grid."


MODULE_EFFECT_INTRO = (
    "Baseline + module − baseline, per seed, then the mean and its two-sided 95 % Student-t interval over the seeds "
    "(paired: the same seed's initialisation, data order and augmented views on both sides). With one seed, linear top-1 "
    "is paired per test image instead: the mean of the per-image differences (−1, 0, +1) with its 95 % normal interval "
    "and McNemar's exact p; that interval covers the test set's sampling, not another training seed's."
)
MODULE_EFFECT_HEADERS = ("dataset", "module − baseline", "metric", "seeds", "Δ mean ± 95 % half-width [interval]")


def module_effect_cells(e: dict) -> list[str]:
    """One row of the module-effect table (Markdown and HTML), in MODULE_EFFECT_HEADERS' order."""
    return [e["dataset"], f"{e['module']} − {e['baseline']}", e["metric"], str(e["n"]), _fmt_effect(e)]


def _fmt_effect(e: dict) -> str:
    if e["half_width"] is None:
        return f"{e['mean']:+.2f} (1 seed: no interval)"
    interval = f"{e['mean']:+.2f} ± {e['half_width']:.2f} [{e['mean'] - e['half_width']:+.2f}, {e['mean'] + e['half_width']:+.2f}]"
    if e.get("over") == "images":
        return f"{interval} over {e['n_images']} test images, McNemar p {e['mcnemar_p']:.2g}"
    return interval


def results_summary(params: Params, rows: list[Row]) -> dict:
    """reports/results.json: dataset -> experiment -> column -> {mean, std, values} over the seeds (std is
    the sample std, None for one seed), plus the seeds: the tables' numbers for programs (the report adds
    report.attention's Grad-CAM shares when it draws the figures)."""
    out: dict[str, dict] = {}
    for row in rows:
        cells: dict[str, object] = {"seeds": list(row["seeds"])}
        for header, _, _ in columns(params):
            values = row["values"].get(header)
            if values:
                std = statistics.stdev(values) if len(values) > 1 else None
                cells[header] = {"mean": statistics.mean(values), "std": std, "values": list(values)}
        out.setdefault(row["dataset"], {})[row["experiment"]] = cells
    return out

"""The tables as Markdown (reports/results.md), CSV (results.csv) and on the console."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from finesyn.config import Params
from finesyn.report.roles import ablations
from finesyn.report.rows import (
    MODULE_EFFECT_HEADERS,
    MODULE_EFFECT_INTRO,
    NOT_PROPORTIONS,
    TOP1,
    Row,
    _cells,
    _delta_top1,
    _fmt_effect,
    _protocol_text,
    _row_index,
    binomial_se,
    budget_check,
    chance_level,
    columns,
    effect_verdict,
    headline,
    missing_references,
    module_effect_cells,
    module_effects,
    retrieval_check,
    start_row_of,
)


def to_markdown(params: Params, rows: list[Row], refs: list[dict] | None = None) -> str:
    """reports/results.md: one function per section, in reading order."""
    out = ["# Results", "", *[f"**{headline(params, rows, d)}**" for d in params.grid.datasets], "", _protocol_text(params), ""]
    for dataset in params.grid.datasets:
        out += _md_dataset(params, rows, dataset)
    out += _md_module_effect(params, rows) + _md_ablations(params, rows) + _md_references(params, refs) + _md_sources(rows)
    return "\n".join(out) + "\n"


def _md_dataset(params: Params, rows: list[Row], dataset: str) -> list[str]:
    """A dataset's results table, what its Δ column means, and the budget and retrieval checks under it."""
    headers, index = [h for h, _, _ in columns(params)], _row_index(rows)
    chance = chance_level(params, dataset)
    out = [f"## {dataset}" + (f" (chance: {chance:.1f}%)" if chance else ""), ""]
    out.append("| experiment | " + " | ".join(headers) + " | Δ top-1 vs start |")
    out.append("|---" * (len(headers) + 2) + "|")
    for row in rows:
        if row["dataset"] == dataset:
            start = start_row_of(params, row["experiment"])
            delta = f"{_delta_top1(row, index.get((dataset, start)))} (vs {start})" if start else "–"
            out.append(f"| {row['experiment']} | " + " | ".join(_cells(row, headers)) + f" | {delta} |")
    out += [
        "",
        "Δ top-1 vs start: linear top-1 of the row minus that of the untrained row it started from (same encoder and init): "
        "what the training added.",
        "",
    ]
    checks = (budget_check(params, rows, dataset) or missing_references(params, rows, dataset), retrieval_check(params, rows, dataset))
    for check in checks:
        if check:
            out += ["> **" + check.replace(": ", ":** ", 1), ""]  # a block quote: the verdict stands out from the prose
    return out


def _md_module_effect(params: Params, rows: list[Row]) -> list[str]:
    effects = module_effects(params, rows)
    if not effects:
        return []
    out = [
        "## The module's effect",
        "",
        *[f"**Verdict:** {effect_verdict(e)}" for e in effects if e["metric"] == TOP1],
        "",
        MODULE_EFFECT_INTRO,
        "",
        "| " + " | ".join(MODULE_EFFECT_HEADERS) + " |",
        "|---" * len(MODULE_EFFECT_HEADERS) + "|",
    ]
    return out + ["| " + " | ".join(module_effect_cells(e)) + " |" for e in effects] + [""]


def _md_ablations(params: Params, rows: list[Row]) -> list[str]:
    abl = ablations(params)
    if not abl:
        return []
    headers, index = [h for h, _, _ in columns(params)], _row_index(rows)
    out = [
        "## Ablations",
        "",
        "Experiments that differ from a baseline (same method, no overrides) only by `overrides`; Δ top-1 = theirs − the baseline's.",
        "",
    ]
    for dataset in params.grid.datasets:
        out += [f"### {dataset}", "", "| experiment | baseline | overrides | " + " | ".join(headers) + " | Δ top-1 |"]
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
    return out


def _md_references(params: Params, refs: list[dict] | None) -> list[str]:
    if not refs:
        return []
    out = ["## Reference numbers", "", f"From `{params.report.reference_numbers}`; difference = ours − reference.", ""]
    out += ["| dataset | experiment | metric | reference | ours | difference |", "|---|---|---|---|---|---|"]
    for c in refs:
        diff = f"{c['diff']:+.2f}" if c["diff"] is not None else "– (not in the grid)"
        out.append(f"| {c['dataset']} | {c['experiment']} | {c['metric']} | {c['value']:.2f} | {c['ours_text']} | {diff} |")
    return out + [""]


def _md_sources(rows: list[Row]) -> list[str]:
    out = ["## Where each number comes from", ""]
    for row in rows:
        for src in row["sources"]:
            out.append(
                f"- {row['dataset']}/{row['experiment']} seed {src['seed']}: "
                + ", ".join(f"[{Path(f).name}]({Path('..') / f})" for f in src["files"])
                + f"; encoder run `{src['encoder_run_id']}`, params hashes "
                + ", ".join(f"{k} `{v}`" for k, v in src["params_hash"].items())
                + f", code `{src['code_version']}`"
            )
    return out


def to_csv(params: Params, rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    headers = [h for h, _, _ in columns(params)]
    proportions = [h for h in headers if h not in NOT_PROPORTIONS]
    w.writerow(
        ["dataset", "experiment", "n_seeds", "n_test"]
        + [f"{h} mean" for h in headers]
        + [f"{h} std" for h in headers]
        + [f"{h} binomial se" for h in proportions]  # the test set's share of the uncertainty, as results.md's one-seed ±
        + ["sources"]
    )
    for row in rows:
        vals = [row["values"].get(h, []) for h in headers]
        means = [f"{statistics.mean(v):.4f}" if v else "" for v in vals]
        stds = [f"{statistics.stdev(v):.4f}" if len(v) > 1 else "" for v in vals]
        n = row.get("n_test")
        ses = [f"{binomial_se(statistics.mean(v), n):.4f}" if v and n else "" for h, v in zip(headers, vals) if h not in NOT_PROPORTIONS]
        w.writerow(
            [row["dataset"], row["experiment"], len(row["seeds"]), n or ""]
            + means
            + stds
            + ses
            + [";".join(f for s in row["sources"] for f in s["files"])]
        )
    return buf.getvalue()


def print_table(params: Params, rows: list[Row]) -> None:
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
        for check in (budget_check(params, rows, dataset), retrieval_check(params, rows, dataset)):
            if check:
                console.print(check, markup=False, highlight=False, soft_wrap=True)  # a file gets whole lines
        for e in module_effects(params, rows):
            if e["dataset"] == dataset:
                console.print(
                    f"{e['module']} − {e['baseline']}, {e['metric']}: {_fmt_effect(e)}"
                    + (f" ({e['n']} seeds, paired)" if e["n"] > 1 else ""),
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )

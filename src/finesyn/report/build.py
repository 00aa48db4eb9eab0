"""The report stage: tables always; figures and index.html when the features, models and data are given."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from finesyn.config import Params
from finesyn.io import atomic_write_json, atomic_write_text
from finesyn.report import attention
from finesyn.report import health as module_health
from finesyn.report.curve_files import write_curve_files
from finesyn.report.figures import build_figures, reconstruction_lines
from finesyn.report.html import to_html
from finesyn.report.references import compare_reference, load_reference_numbers
from finesyn.report.roles import effective_settings
from finesyn.report.rows import Row, collect, columns, results_summary
from finesyn.report.text import to_csv, to_markdown


def log_drift(params: Params, rows: list[Row], log: logging.Logger) -> None:
    """Say whether the metrics reproduce the committed ones (exactly, to rounding, or not)."""
    from finesyn import drift

    files = [Path(f) for row in rows for src in row["sources"] for f in src["files"]]
    text = drift.note(drift.compare(files, columns(params)), seed_spread(params, rows))
    if text:
        log.info("%s", text)


def seed_spread(params: Params, rows: list[Row]) -> dict[tuple[str, str], float]:
    """(metrics file, column) -> the sample sd of that column over the row's seeds, where it has two or more."""
    out = {}
    for row in rows:
        for header, name, _ in columns(params):
            values = row["values"].get(header, [])
            if len(values) >= 2:
                for f in (f for src in row["sources"] for f in src["files"] if Path(f).name == name):
                    out[(str(Path(f)), header)] = statistics.stdev(values)
    return out


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
    healthy = module_health.collect(params, models_root) if models_root is not None else []
    md += module_health.to_markdown(healthy)
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.csv", to_csv(params, rows))
    summary = module_health.add_to_summary(results_summary(params, rows), healthy)
    atomic_write_json(out / "results.json", summary)  # the tables stand even if a figure below fails
    for line in recon:
        log.info("Fig. 4 %s", line.removeprefix("- "))
    # the table itself is printed by `python -m finesyn.report` (what `make repro` ends with), once
    log.info(
        "wrote %s, %s and %s (python -m finesyn.report prints the tables)", out / "results.md", out / "results.csv", out / "results.json"
    )
    result: dict[str, Any] = {"rows": rows, "refs": refs, "figures": []}
    if features_root is None or models_root is None or data_root is None:
        return result
    settings = effective_settings(params, resolved if resolved is not None else out / "params.resolved.json")
    for d in (out / "figures", out / "curves"):  # declared outputs: exist even when a grid draws nothing
        d.mkdir(parents=True, exist_ok=True)
    figs = build_figures(params, rows, out / "figures", log, features_root=features_root, models_root=models_root, data_root=data_root)
    roots = {"metrics": metrics_root, "features": features_root, "models": models_root, "data": data_root}
    evidence = attention.measure(params, roots, log)
    if evidence:  # the tables again, with the class evidence added
        atomic_write_text(out / "results.md", md + attention.to_markdown(params, evidence))
        atomic_write_json(out / "results.json", attention.add_to_summary(summary, evidence))
    curves = write_curve_files(params, models_root, out / "curves")
    log.info("wrote %d curve TSVs, every run of the grid in each, to %s (dvc plots show)", len(curves), out / "curves")
    page = to_html(params, rows, figs, out, refs, settings, attention.to_html(params, evidence), module_health.to_html(healthy))
    atomic_write_text(out / "index.html", page)
    log.info("wrote %s (%d figures)", out / "index.html", sum(f["path"] is not None for f in figs))
    result["figures"], result["attention"] = figs, evidence
    return result

"""Results tables and the HTML report from the metrics, features and models of the grid.

Tables: rows = dataset × experiment, mean ± std over seeds (reports/results.md, results.csv);
an ablation section for experiments that differ from a baseline only by `overrides`; optional
reference numbers (`report.reference_numbers`, a CSV: dataset, experiment, metric, value) shown
beside ours with the difference. Figures (`figures`: which files, captions; `plots`: the drawing) go to reports/figures/ and are embedded
in reports/index.html, a single self-contained file. Every row names the metrics files, params
hashes and code version that produced it.

Modules: `rows` (the rows and the budget check), `roles` (what each experiment is), `references`,
`text` (Markdown, CSV, console), `figures` + `plots`, `html`, `build` (the stage).
"""

from finesyn.report.build import build_report, log_drift
from finesyn.report.figures import fig_alpha
from finesyn.report.references import compare_reference, load_reference_numbers
from finesyn.report.roles import effective_settings
from finesyn.report.rows import budget_check, collect, paired_difference
from finesyn.report.text import print_table, to_markdown

__all__ = [
    "budget_check", "build_report", "collect", "compare_reference", "effective_settings", "fig_alpha",
    "load_reference_numbers", "log_drift", "paired_difference", "print_table", "to_markdown",
]  # fmt: skip

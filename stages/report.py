"""report: metrics, features and models of the grid -> reports/results.md + results.csv + results.json
(mean ± std over seeds), reports/figures/*.png (analogues of the paper's Figs. 2-5, training curves) and
reports/index.html (one self-contained file: tables, embedded figures, provenance of every number).

Without --features/--models/--data only the tables are written.
"""

from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    metrics: Path = typer.Option(Path("metrics"), help="metrics root (metrics/<dataset>/<experiment>/seed<k>/)"),
    out: Path = typer.Option(Path("reports"), help="report directory"),
    features: Path | None = typer.Option(None, help="features root (features/<dataset>/<experiment>/seed<k>.npz): Fig. 2"),
    models: Path | None = typer.Option(None, help="models root (models/<dataset>/<experiment>/seed<k>/): Figs. 3, 4, curves"),
    data: Path | None = typer.Option(None, help="prepared-data root (data/prepared/<dataset>/): Fig. 3 images"),
    resolved: Path | None = typer.Option(None, help="the validate stage's params.resolved.json (default: <out>/params.resolved.json)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same outputs
        from finesyn.report import build_report

        build_report(p, metrics, out, stage_logging(None), features_root=features, models_root=models, data_root=data, resolved=resolved)


if __name__ == "__main__":
    app()

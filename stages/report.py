"""report: every metrics file of the grid -> reports/results.md + results.csv (mean ± std over seeds)."""

from pathlib import Path

import typer

from finesyn.cli import load, stage_logging, user_errors

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    metrics: Path = typer.Option(Path("metrics"), help="metrics root (metrics/<dataset>/<experiment>/seed<k>/)"),
    out: Path = typer.Option(Path("reports"), help="report directory"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors():
        from finesyn.report import build_report

        build_report(p, metrics, out, stage_logging(None))


if __name__ == "__main__":
    app()

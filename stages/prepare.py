"""prepare: dataset -> cached uint8 image array + manifest (id, label, split) + meta."""

from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, progress_bar, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    dataset: str = typer.Option(..., help="name under `datasets:` in params.yaml"),
    out: Path = typer.Option(..., help="cache directory to write"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same outputs
        from finesyn.data.layout import check_dataset_root
        from finesyn.data.prepare import prepare_dataset

        cfg = check_dataset_root(p, dataset)
        log = stage_logging(out.parent / f"{out.name}.prepare.log")
        with progress_bar(f"prepare {dataset}", "img") as update:
            ds = prepare_dataset(dataset, cfg, out, progress=lambda done, total: update(done, total))
        log.info(
            "prepared %s: %d images %s, %d classes, %d px -> %s", dataset, len(ds), ds.meta["counts"], len(ds.classes), ds.image_size, out
        )


if __name__ == "__main__":
    app()

"""raw_manifest: a dataset's raw tree -> one line per file (path, size, mtime), the file prepare depends on."""

from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    dataset: str = typer.Option(..., help="name under `datasets:` in params.yaml"),
    out: Path = typer.Option(..., help="manifest file to write (rewritten only when the tree changed)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same file
        from finesyn.config import dataset_config
        from finesyn.data.raw_manifest import raw_manifest, write_if_changed

        text = raw_manifest(dataset, dataset_config(p, dataset))
        write_if_changed(out, text)  # under DVC the file is gone at the start (outputs are removed first): always written
        files = max(text.count("\n") - 1, 0)  # lines less the header
        typer.echo(f"raw_manifest {dataset}: {files} files listed -> {out}")


if __name__ == "__main__":
    app()

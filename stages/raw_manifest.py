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
        written = write_if_changed(out, text)
        files = max(text.count("\n") - 1, 0)
        typer.echo(f"raw_manifest {dataset}: {files} files -> {out} ({'changed' if written else 'unchanged'})")


if __name__ == "__main__":
    app()

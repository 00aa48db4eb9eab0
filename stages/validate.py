"""validate: check the whole params.yaml (every key, every dataset root in the grid) before any work,
and write reports/params.resolved.json: each experiment's effective settings after its overrides.

DVC reruns this stage whenever params.yaml changes, so a typo in a section that no other stage
reads still fails `dvc repro`, naming the key.
"""

from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    out: Path = typer.Option(Path("reports/params.resolved.json"), help="resolved settings to write"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same outputs
        from finesyn.data.layout import check_dataset_root
        from finesyn.io import atomic_write_json
        from finesyn.recipe_fit import recipe_warnings
        from finesyn.run_identity import run_settings

        for name in p.grid.datasets:
            check_dataset_root(p, name)
        for init, arch in sorted({(p.pretrain_for(e).init, p.pretrain_for(e).backbone) for e in p.grid.experiments}):
            if init not in ("random", "imagenet"):  # a file: it must load now, not after an hour of other stages
                from finesyn.models.backbone import read_init_state

                read_init_state(init, arch)
        resolved = {
            "grid": p.grid.model_dump(mode="json"),
            "runs": {f"{d}/{e}": run_settings(p, d, e) for d in p.grid.datasets for e in p.grid.experiments},
        }
        atomic_write_json(out, resolved)
        for line in recipe_warnings(p):  # runs, and learns little: said before an hour of training
            stage_logging(None).warning("%s", line)
    grid = f"{len(p.grid.datasets)} datasets x {len(p.grid.experiments)} experiments x {len(p.grid.seeds)} seeds"
    stage_logging(None).info("%s: valid (%s) -> %s", params, grid, out)  # timestamped, like every stage's lines


if __name__ == "__main__":
    app()

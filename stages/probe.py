"""probe: linear probe on the frozen encoder -> probe.json (top-1, top-5: the metrics DVC compares) and
probe.meta.json (per-class accuracy, the selected L2, timings, protocol, provenance).

probe.protocol lbfgs: logistic regression on the extract stage's cached features (--features).
probe.protocol sgd_paper: the paper's SGD probe on the frozen backbone with train-time augmentation,
which needs the encoder (--model), the prepared cache (--data) and its crop size (--dataset)."""

import contextlib
from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, progress_bar, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    features: Path | None = typer.Option(None, help="features file from extract (.npz); needed by lbfgs"),
    out: Path = typer.Option(..., help="probe.json to write (numbers only; its record goes to probe.meta.json next to it)"),
    seed: int = typer.Option(0, help="seed of the run (validation split / SGD init, shuffling, augmentation)"),
    dataset: str | None = typer.Option(None, help="name under `datasets:` (crop size); needed by sgd_paper"),
    data: Path | None = typer.Option(None, help="prepared cache directory; needed by sgd_paper"),
    model: Path | None = typer.Option(
        None, help="pretrain output directory (encoder.pt); needed by sgd_paper; with lbfgs, the features must be of its run"
    ),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same outputs
        from finesyn.eval.probe_protocols import run_probe
        from finesyn.io import atomic_write_json
        from finesyn.metric_files import PROBE_KEYS, split_record
        from finesyn.paths import RunPaths
        from finesyn.provenance import provenance

        log = stage_logging(None)
        sgd = p.probe.protocol == "sgd_paper"  # lbfgs on cached features takes seconds: no bar
        with progress_bar(f"probe {'/'.join(out.parts[-3:-1])}", "epoch") if sgd else contextlib.nullcontext(None) as update:
            res, settings = run_probe(p, seed, features=features, dataset=dataset, data=data, model=model, progress=update)
        res.update(provenance(seed, settings, protocol=res.get("protocol")))
        metrics, meta = split_record(res, PROBE_KEYS, f"probe ({p.probe.protocol})")
        atomic_write_json(RunPaths.meta_of(out), meta)
        atomic_write_json(out, metrics)
        detail = f"l2={res.get('l2')}" if p.probe.protocol == "lbfgs" else f"{res['selection']}, epoch {res['epoch']}"
        log.info("probe top-1 %.2f%% top-5 %.2f%% (%s) -> %s", res["top1"], res["top5"], detail, out)


if __name__ == "__main__":
    app()

"""probe: linear probe on frozen features -> probe.json (top-1/top-5, per-class accuracy, protocol, provenance)."""

import time
from pathlib import Path

import typer

from finesyn.cli import load, stage_logging, user_errors

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    features: Path = typer.Option(..., help="features file from extract (.npz)"),
    out: Path = typer.Option(..., help="probe.json to write"),
    seed: int = typer.Option(0, help="seed of the run (validation split)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors():
        from finesyn.config import ParamsError
        from finesyn.eval.features import load_features
        from finesyn.eval.probe import lbfgs_probe
        from finesyn.io import atomic_write_json
        from finesyn.provenance import provenance

        cfg, log = p.probe, stage_logging(None)
        if cfg.protocol != "lbfgs":
            raise ParamsError("probe.protocol: 'sgd_paper' is not available in this release; use 'lbfgs'")
        f = load_features(features)
        t0 = time.perf_counter()
        res = lbfgs_probe(
            f["train_features"], f["train_labels"], f["test_features"], f["test_labels"],
            num_classes=int(f["num_classes"]), l2_grid=cfg.l2_grid, val_fraction=cfg.val_fraction, seed=seed, max_iter=cfg.max_iter,
        )
        res["fit_time_s"] = round(time.perf_counter() - t0, 3)
        res["encoder_run_id"] = str(f["encoder_run_id"])
        res["feature"] = str(f["feature"])
        res.update(provenance(seed, {"probe": cfg.model_dump(mode="json"), "encoder_run_id": res["encoder_run_id"]}, protocol=res.get("protocol")))
        atomic_write_json(out, res)
        log.info("probe top-1 %.2f%% top-5 %.2f%% (l2=%s) -> %s", res["top1"], res["top5"], res.get("l2"), out)


if __name__ == "__main__":
    app()

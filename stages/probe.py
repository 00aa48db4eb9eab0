"""probe: linear probe on the frozen encoder -> probe.json (top-1/top-5, per-class accuracy, protocol, provenance).

probe.protocol lbfgs: logistic regression on the extract stage's cached features (--features).
probe.protocol sgd_paper: the paper's SGD probe on the frozen backbone with train-time augmentation,
which needs the encoder (--model), the prepared cache (--data) and its crop size (--dataset)."""

import time
from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    features: Path | None = typer.Option(None, help="features file from extract (.npz); needed by lbfgs"),
    out: Path = typer.Option(..., help="probe.json to write"),
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
        from finesyn.config import ParamsError
        from finesyn.io import atomic_write_json
        from finesyn.provenance import provenance

        cfg, log = p.probe, stage_logging(None)
        needed = {"lbfgs": {"--features": features}, "sgd_paper": {"--dataset": dataset, "--data": data, "--model": model}}[cfg.protocol]
        missing = [k for k, v in needed.items() if v is None]
        if missing:
            raise ParamsError(f"probe.protocol {cfg.protocol!r} needs {', '.join(missing)}")
        t0 = time.perf_counter()
        if cfg.protocol == "lbfgs":
            from finesyn.artifacts import check_same_run, load_features
            from finesyn.eval.probe import lbfgs_probe

            f = load_features(features)
            if model is not None:
                check_same_run(features, f["encoder_run_id"], model)
            res = lbfgs_probe(
                f["train_features"],
                f["train_labels"],
                f["test_features"],
                f["test_labels"],
                num_classes=int(f["num_classes"]),
                l2_grid=cfg.l2_grid,
                val_fraction=cfg.val_fraction,
                seed=seed,
                max_iter=cfg.max_iter,
            )
            res["fit_time_s"] = round(time.perf_counter() - t0, 3)
            res["encoder_run_id"] = str(f["encoder_run_id"])
            res["feature"] = str(f["feature"])
            settings = {"probe": cfg.model_dump(mode="json"), "encoder_run_id": res["encoder_run_id"]}
        else:
            from finesyn.config import _suggest
            from finesyn.data.cache import open_cache
            from finesyn.eval.features import load_encoder
            from finesyn.eval.probe_sgd import sgd_probe

            if dataset not in p.datasets:
                raise ParamsError(
                    f"dataset {dataset!r} is not defined under `datasets:`{_suggest(dataset, p.datasets)}; defined: {sorted(p.datasets)}"
                )
            crop = p.datasets[dataset].crop_size
            ds = open_cache(data)
            backbone, _, state = load_encoder(model)
            tr, te = ds.indices("train"), ds.indices("test")
            res = sgd_probe(
                backbone,
                ds.images,
                tr,
                ds.labels[tr],
                te,
                ds.labels[te],
                num_classes=len(ds.classes),
                crop_size=crop,
                lr=cfg.sgd_lr,
                epochs=cfg.sgd_epochs,
                milestones=cfg.sgd_milestones,
                batch_size=cfg.sgd_batch_size,
                momentum=cfg.sgd_momentum,
                weight_decay=cfg.sgd_weight_decay,
                report=cfg.sgd_report,
                seed=seed,
                device=cfg.sgd_device,
            )
            res["fit_time_s"] = round(time.perf_counter() - t0, 3)
            res["encoder_run_id"] = str(state["run_id"])
            res["feature"] = "backbone"
            settings = {"probe": cfg.model_dump(mode="json"), "encoder_run_id": res["encoder_run_id"], "crop_size": crop}
        res.update(provenance(seed, settings, protocol=res.get("protocol")))
        atomic_write_json(out, res)
        detail = f"l2={res.get('l2')}" if cfg.protocol == "lbfgs" else f"{res['selection']}, epoch {res['epoch']}"
        log.info("probe top-1 %.2f%% top-5 %.2f%% (%s) -> %s", res["top1"], res["top5"], detail, out)


if __name__ == "__main__":
    app()

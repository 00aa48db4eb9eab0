"""The linear-probe protocols behind `probe.protocol`, each as one call that returns probe.json's fields.

lbfgs: logistic regression on the extract stage's cached features. sgd_paper: the paper's SGD
probe on the frozen backbone with train-time augmentation (it needs the encoder and the images).
Each returns (result, settings): the settings are what the result's provenance hashes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from finesyn.config import ParamsError, _suggest

NEEDS = {"lbfgs": ("features",), "sgd_paper": ("dataset", "data", "model")}  # stage options each protocol reads


def run_probe(
    params, seed: int, *, features: Path | None, dataset: str | None, data: Path | None, model: Path | None, progress=None
) -> tuple[dict, dict]:
    """(probe.json's fields, the settings its provenance hashes) under params.probe.protocol.
    `progress(epoch, epochs, info)`: the sgd_paper protocol's epochs (the lbfgs fit is seconds)."""
    cfg = params.probe
    given = {"features": features, "dataset": dataset, "data": data, "model": model}
    missing = [f"--{k}" for k in NEEDS[cfg.protocol] if given[k] is None]
    if missing:
        raise ParamsError(f"probe.protocol {cfg.protocol!r} needs {', '.join(missing)}")
    t0 = time.perf_counter()
    # the options the protocol needs are given (NEEDS, checked above)
    if cfg.protocol == "lbfgs":
        res, run, settings = _lbfgs_on_features(cfg, seed, cast(Path, features), model)
    else:
        res, run, settings = _sgd_on_encoder(params, seed, cast(str, dataset), cast(Path, data), cast(Path, model), progress)
    return {**res, "fit_time_s": round(time.perf_counter() - t0, 3), **run}, settings


def _lbfgs_on_features(cfg, seed: int, features: Path, model: Path | None) -> tuple[dict, dict, dict]:
    """(probe result, its encoder run, the settings it depends on)"""
    from finesyn.artifacts import check_same_run, load_features
    from finesyn.eval.paired import ids_digest
    from finesyn.eval.probe import lbfgs_probe

    f = load_features(features)
    if model is not None:
        check_same_run(features, f["encoder_run_id"], model)
    res = lbfgs_probe(
        f["train_features"], f["train_labels"], f["test_features"], f["test_labels"], num_classes=int(f["num_classes"]),
        l2_grid=cfg.l2_grid, val_fraction=cfg.val_fraction, seed=seed, max_iter=cfg.max_iter,
    )  # fmt: skip
    res["test_hits"]["ids_digest"] = ids_digest(f["test_ids"])
    run = {"encoder_run_id": str(f["encoder_run_id"]), "feature": str(f["feature"])}
    return res, run, {"probe": cfg.model_dump(mode="json"), "encoder_run_id": run["encoder_run_id"]}


def _sgd_on_encoder(params, seed: int, dataset: str, data: Path, model: Path, progress=None) -> tuple[dict, dict, dict]:
    from finesyn.data.prepared import open_cache
    from finesyn.eval.features import load_encoder
    from finesyn.eval.probe_sgd import sgd_probe

    cfg = params.probe
    if dataset not in params.datasets:
        raise ParamsError(
            f"dataset {dataset!r} is not defined under `datasets:`{_suggest(dataset, params.datasets)}; defined: {sorted(params.datasets)}"
        )
    crop = params.datasets[dataset].crop_size
    ds = open_cache(data)
    backbone, _, state = load_encoder(model)
    tr, te = ds.indices("train"), ds.indices("test")
    res = sgd_probe(
        backbone, ds.images, tr, ds.labels[tr], te, ds.labels[te], num_classes=len(ds.classes), crop_size=crop,
        lr=cfg.sgd_lr, epochs=cfg.sgd_epochs, milestones=cfg.sgd_milestones, batch_size=cfg.sgd_batch_size,
        momentum=cfg.sgd_momentum, weight_decay=cfg.sgd_weight_decay, report=cfg.sgd_report, seed=seed, device=cfg.sgd_device,
        progress=progress,
    )  # fmt: skip
    run = {"encoder_run_id": str(state["run_id"]), "feature": "backbone"}
    return res, run, {"probe": cfg.model_dump(mode="json"), "encoder_run_id": run["encoder_run_id"], "crop_size": crop}

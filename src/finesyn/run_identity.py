"""The identity of a pretraining run: exactly the settings that determine its trained encoder.

Resume and reuse key on it (a checkpoint or a finished encoder is used again only under the same
identity), and `validate` records it for every run of the grid. It reads only the validated
params, so validate and the report compute it without importing the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finesyn.config import HOW_TO_RUN, PretrainConfig


@dataclass
class RunSpec:
    """One pretraining run: what it computes, its identity, and where its checkpoints go."""

    method: str  # registry name or "none"
    synth: bool
    cfg: PretrainConfig
    crop_size: int
    seed: int
    run_id: str  # hash of run_settings + the data: a checkpoint of another run is never resumed
    ckpt_dir: Path


def how_to_run_fields() -> list[str]:
    """`pretrain` fields marked HOW_TO_RUN in config.py: how to run, not what is computed."""
    return [name for name, f in PretrainConfig.model_fields.items() if f.json_schema_extra == HOW_TO_RUN]


# Raised when a method computes something else under the same settings, so that its runs get a new
# identity and a checkpoint of the old computation is never resumed. mocov2 2: the queue is no
# longer capped at the training set and stores each key's image index (own images masked).
# supervised 2: with methods.supervised.views 1 the loop no longer draws a second (unread) view, so
# the augmentation stream, and the run, differ from before.
METHOD_REVISION = {"mocov2": 2, "supervised": 2}


LATER_SYNTH_DEFAULTS = {"pair_negatives": "queue", "pair_augment": False}


def run_settings(params, dataset: str, experiment: str) -> dict:
    """Exactly the settings that determine the trained encoder: its identity for resume and reuse.

    A baseline does not depend on α, ν or the module's settings, a method does not depend on
    another method's settings, and SGD does not depend on AdamW's beta2, so changing those never
    invalidates its checkpoints.
    """
    exp = params.experiments[experiment]
    cfg = params.pretrain_for(experiment)
    d = cfg.model_dump(mode="json")
    crop = params.datasets[dataset].crop_size
    if exp.method == "none":
        return {"method": "none", "backbone": cfg.backbone, "stem": cfg.stem, "pool": cfg.pool, "init": cfg.init, "crop_size": crop}
    d["methods"] = {exp.method: d["methods"][exp.method]}
    if not exp.synth:
        for key in ("alpha", "nu", "synth"):
            d.pop(key)
    if cfg.optimizer == "sgd":
        d.pop("adam_beta2")
    if exp.synth:  # options added later: at their default they compute what runs before them did (same identity)
        for key, default in LATER_SYNTH_DEFAULTS.items():
            if d["synth"][key] == default:
                d["synth"].pop(key)
    for key in how_to_run_fields():
        d.pop(key)
    revision = {"revision": METHOD_REVISION[exp.method]} if exp.method in METHOD_REVISION else {}
    return {"method": exp.method, **revision, "synth": exp.synth, "crop_size": crop, **d}

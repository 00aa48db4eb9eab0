"""What an encoder's features encode besides the class: linear probes for the nuisance factors.

For one variant of studies/learning.py, train it as the study does and fit the pipeline's L-BFGS
linear probe, on the start and on the end encoder, for the class and for three nuisance factors
of the generator (read back from its random streams): the background scene (one of 32), the
bird's rotation (8 bins of ±40°) and its body hue (8 bins). It answers "does SSL learn anything
here, and what?" when the class probe stays at chance:

    python -m studies.nuisance_probe default_mocov2_q4096
"""

from __future__ import annotations

import colorsys
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from finesyn.data import synthetic as syn
from finesyn.eval.features import extract_features
from finesyn.eval.probe import lbfgs_probe
from finesyn.train import RunSpec, pretrain
from studies.learning import DATA, VARIANTS, dataset, pretrain_config


def nuisance_labels(data: dict) -> dict[str, np.ndarray]:
    """Per item (train then test): background id, rotation bin, body-hue bin, from the generator's own streams."""
    d = {**DATA, **data}
    out: dict[str, list[int]] = {"bg32": [], "rot8": [], "hue8": []}
    for split, per in (("train", d["train_per_class"]), ("test", d["test_per_class"])):
        for i in range(per * d["num_classes"]):
            rng = np.random.default_rng([d["seed"], syn._SPLITS[split], i])
            b = int(rng.integers(32))
            look = np.random.default_rng([d["seed"], 8, int(rng.integers(d["look_bank"]))]) if d.get("look_bank") else None
            p = syn._item_params(rng, d["image_size"], (0.22, 0.30), np.random.default_rng([d["seed"], 7, b]), look)
            out["bg32"].append(b)
            out["rot8"].append(min(int((p["theta"] / np.radians(40) + 1) / 2 * 8), 7))
            out["hue8"].append(int(colorsys.rgb_to_hsv(*p["body"])[0] * 8) % 8)
    return {k: np.array(v) for k, v in out.items()}


def probes(backbone, ds, targets: dict[str, np.ndarray]) -> dict[str, float]:
    tr, te = np.nonzero(ds.split == "train")[0], np.nonzero(ds.split == "test")[0]
    ftr, fte = (extract_features(backbone, ds.images, idx, ds.image_size) for idx in (tr, te))
    return {name: round(lbfgs_probe(ftr, y[tr], fte, y[te], num_classes=int(y.max()) + 1)["top1"], 1) for name, y in targets.items()}


def main(argv: list[str] | None = None) -> int:
    name = (argv or sys.argv[1:])[0]
    v = VARIANTS[name]
    cfg, ds = pretrain_config(v), dataset(v["data"])
    if cfg.init != "random" or v["data"].get("background_bank", 32) != 32:
        raise SystemExit(f"{name}: the probe reads back 32 background scenes and a random init only")
    targets = {"class": ds.labels, **nuisance_labels(v["data"])}
    tr = np.nonzero(ds.split == "train")[0]
    with tempfile.TemporaryDirectory() as tmp:
        spec = lambda c: RunSpec(v["method"], False, c, ds.image_size, 0, f"probe-{name}", Path(tmp))  # noqa: E731
        start = pretrain(ds.images, spec(cfg.model_copy(update={"epochs": 0})), tr, labels=ds.labels, num_classes=len(ds.class_names))
        end = pretrain(ds.images, spec(cfg), tr, labels=ds.labels, num_classes=len(ds.class_names))
    print(
        json.dumps(
            {
                "variant": name,
                "final_loss": round(end.history[-1]["loss"], 3),
                "start": probes(start.backbone, ds, targets),
                "end": probes(end.backbone, ds, targets),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

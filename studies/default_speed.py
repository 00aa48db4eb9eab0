"""Seconds for one epoch (31 steps) of the default's pretraining, per method, under the speed levers
that chose the default (docs/findings.md, "the time budget"): memory layout and decoder width.

    python -m studies.default_speed               # ~3 min on 2 cores; prints one line per setting

Uses the library's own `pretrain()` on the default data (params.yaml's `pretrain` section, no hold-out,
no monitor), so every per-step cost the pipeline pays is included: augmentation, both encoders,
the queue, the module, checkpoints at the epoch end. Measure on an idle machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from finesyn.train import RunSpec, pretrain
from studies.learning import _v, dataset, pretrain_config

SETTINGS = [  # (method, synth, pretrain overrides)
    *[(m, False, {"channels_last": cl}) for m in ("mocov2", "supervised") for cl in (False, True)],
    *[("mocov2", True, {"channels_last": True, "synth": {"decoder_width": w}}) for w in (256, 128, 64)],
]


def epoch_seconds(method: str, synth: bool, overrides: dict) -> float:
    ds = dataset({})
    tr = np.nonzero(ds.split == "train")[0]
    cfg = pretrain_config(_v(method, {}, **overrides, epochs=1))  # params.yaml's pretrain, deep-merged with the overrides
    with tempfile.TemporaryDirectory(prefix="finesyn-speed-") as tmp:
        t0 = time.perf_counter()
        pretrain(
            ds.images,
            RunSpec(method, synth, cfg, ds.image_size, 0, "speed", Path(tmp)),
            tr,
            labels=ds.labels,
            num_classes=len(ds.class_names),
        )
        return time.perf_counter() - t0


def main() -> int:
    for method, synth, over in SETTINGS:
        print(f"{method}{' + module' if synth else ''} {over}: {epoch_seconds(method, synth, over):.1f} s / 31 steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

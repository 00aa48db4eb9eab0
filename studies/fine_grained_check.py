"""Is a generated data setting still fine-grained? The raw-pixel criteria of tests/test_synthetic.py
for any `GeneratorSettings` of `generate_synthetic` (the study's data variants):

    python -m studies.fine_grained_check look_bank=4 background_bank=4

prints the test accuracy of a linear classifier on 32-px pixels and on global colour statistics
(the test asserts both stay below chance + 5 points), with the same fit as the test: the probe is the
test's own (tests/shortcut_probe.py), imported from the repository root.
"""

from __future__ import annotations

import json
import sys

from finesyn.data.synthetic import GeneratorSettings, generate_synthetic
from tests.shortcut_probe import CHANCE_MARGIN, colour_features, fit_logreg, pixel_features


def check(**kwargs) -> dict:
    ds = generate_synthetic(GeneratorSettings(**kwargs))
    tr = ds.split == "train"
    bound = 1.0 / len(ds.class_names) + CHANCE_MARGIN
    out = {"data": kwargs, "bound": bound}
    pix, colour = pixel_features(ds), colour_features(ds)
    out["pixels_test_acc"] = fit_logreg(pix[tr], ds.labels[tr], pix[~tr], ds.labels[~tr], 0.01)[1]
    out["colour_test_acc"] = fit_logreg(colour[tr], ds.labels[tr], colour[~tr], ds.labels[~tr], 1.0)[1]
    out["fine_grained"] = out["pixels_test_acc"] < bound and out["colour_test_acc"] < bound
    return out


def main(argv: list[str]) -> int:
    kwargs = {k: json.loads(v) for k, v in (a.split("=", 1) for a in argv)}
    print(json.dumps(check(**kwargs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

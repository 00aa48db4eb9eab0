"""Is a generated data setting still fine-grained? The raw-pixel criteria of tests/test_synthetic.py
for any `generate_synthetic` keyword arguments (the study's data variants):

    python -m benchmarks.fine_grained_check look_bank=4 background_bank=4

prints the test accuracy of a linear classifier on 32-px pixels and on global colour statistics
(the test asserts both stay below chance + 5 points), with the same fit as the test.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from finesyn.data.synthetic import generate_synthetic

CHANCE_MARGIN = 0.05  # tests/test_synthetic.py


def _fit(xtr, ytr, xte, yte, c: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    with threadpool_limits(1):
        return float(LogisticRegression(C=c, max_iter=200).fit((xtr - mu) / sd, ytr).score((xte - mu) / sd, yte))


def check(**kwargs) -> dict:
    ds = generate_synthetic(**kwargs)
    n, s = len(ds), ds.image_size
    tr = ds.split == "train"
    pix = ds.images.astype(np.float32).reshape(n, s // 2, 2, s // 2, 2, 3).mean(axis=(2, 4)).reshape(n, -1) / 255.0
    x = ds.images.astype(np.float32).reshape(n, -1, 3) / 255.0
    colour = np.concatenate([x.mean(1), x.std(1)] + [np.percentile(x, q, axis=1) for q in (5, 25, 50, 75, 95)], 1)
    bound = 1.0 / len(ds.class_names) + CHANCE_MARGIN
    out = {"data": kwargs, "bound": bound}
    out["pixels_test_acc"] = _fit(pix[tr], ds.labels[tr], pix[~tr], ds.labels[~tr], 0.01)
    out["colour_test_acc"] = _fit(colour[tr], ds.labels[tr], colour[~tr], ds.labels[~tr], 1.0)
    out["fine_grained"] = out["pixels_test_acc"] < bound and out["colour_test_acc"] < bound
    return out


def main(argv: list[str]) -> int:
    kwargs = {k: json.loads(v) for k, v in (a.split("=", 1) for a in argv)}
    print(json.dumps(check(**kwargs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

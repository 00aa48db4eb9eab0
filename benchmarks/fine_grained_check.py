"""Is a generated data setting still fine-grained? The raw-pixel criteria of tests/test_synthetic.py
for any `GeneratorSettings` of `generate_synthetic` (the study's data variants):

    python -m benchmarks.fine_grained_check look_bank=4 background_bank=4

prints the test accuracy of a linear classifier on 32-px pixels and on global colour statistics
(the test asserts both stay below chance + 5 points), with the same fit as the test.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from finesyn.data.synthetic import GeneratorSettings, generate_synthetic

CHANCE_MARGIN = 0.05  # asserted by tests/test_synthetic.py: no-shortcut accuracy < chance + 5 points


def fit_logreg(xtr, ytr, xte, yte, c: float) -> tuple[float, float]:
    """(train, test) accuracy of a standardised logistic regression (the data test's shortcut probe)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    # one BLAS thread: multithreaded BLAS spin-waits badly on a busy 2-core machine
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=c, max_iter=200).fit(xtr, ytr)
    return float(clf.score(xtr, ytr)), float(clf.score(xte, yte))


def pixel_features(ds) -> np.ndarray:
    """The images at half resolution (2x2 means), flattened, in [0, 1]."""
    n, s = len(ds), ds.image_size
    return ds.images.astype(np.float32).reshape(n, s // 2, 2, s // 2, 2, 3).mean(axis=(2, 4)).reshape(n, -1) / 255.0


def colour_features(ds) -> np.ndarray:
    """Global colour statistics per image: channel means, stds and 5/25/50/75/95th percentiles."""
    x = ds.images.astype(np.float32).reshape(len(ds), -1, 3) / 255.0
    return np.concatenate([x.mean(1), x.std(1)] + [np.percentile(x, q, axis=1) for q in (5, 25, 50, 75, 95)], 1)


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

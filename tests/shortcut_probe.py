"""The shortcut probe of tests/test_synthetic.py: can a linear model read the class off raw pixels or global colour
statistics? A fine-grained setting keeps both at chance (+ CHANCE_MARGIN). studies/fine_grained_check.py applies the
same criterion to any `GeneratorSettings` (tests import no study; the study imports this)."""

from __future__ import annotations

import numpy as np

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

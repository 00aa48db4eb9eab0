"""Two encoders scored on the same test images: their per-image hits and the paired difference.

With one seed the test set is the whole of the uncertainty a reader can estimate, and most of it
cancels between two encoders that agree on most images: the paired difference of their accuracies
has the standard error √(mean(d²) − mean(d)²)/√n of the per-image differences d ∈ {−1, 0, +1}, far
below the two binomial errors added. McNemar's exact test asks whether the discordant images split
evenly. probe.meta.json keeps each run's hits bit-packed, with a hash of the test ids they belong to.
"""

from __future__ import annotations

import base64
import hashlib
import math

import numpy as np


def ids_digest(ids: np.ndarray) -> str:
    """A short hash of the test ids in their order: two hit vectors pair only under the same digest."""
    return hashlib.sha256("\n".join(map(str, np.asarray(ids).tolist())).encode()).hexdigest()[:16]


def pack_hits(hits: np.ndarray, ids: np.ndarray | None = None) -> dict:
    """probe.meta.json's `test_hits`: one bit per test image (top-1 correct), base64 of np.packbits."""
    h = np.asarray(hits, dtype=bool)
    rec = {"n": int(h.size), "packbits_b64": base64.b64encode(np.packbits(h).tobytes()).decode("ascii")}
    if ids is not None:
        rec["ids_digest"] = ids_digest(ids)
    return rec


def unpack_hits(rec: dict) -> np.ndarray:
    bits = np.frombuffer(base64.b64decode(rec["packbits_b64"]), dtype=np.uint8)
    return np.unpackbits(bits, count=int(rec["n"])).astype(bool)


def paired_accuracy_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Accuracy of `a` minus that of `b` (percentage points) on the same images, with its two-sided
    normal interval over the images and McNemar's exact p (binomial on the discordant images)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired hits must be two vectors of one length >= 2 (got {a.shape} and {b.shape})")
    d = a.astype(np.float64) - b.astype(np.float64)
    n = d.size
    mean = float(d.mean())
    se = math.sqrt(max(float((d * d).mean()) - mean * mean, 0.0) / (n - 1))
    z = float(stats.norm.ppf(0.5 + level / 2))
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return {
        "n_images": n,
        "mean": 100 * mean,
        "half_width": 100 * z * se,
        "se": 100 * se,
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": p,
    }

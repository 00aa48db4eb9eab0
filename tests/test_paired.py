"""Per-image paired comparison of two encoders on one test set (eval/paired.py, the report's one-seed module effect)."""

import math

import numpy as np
import pytest

from finesyn.eval.paired import pack_hits, paired_accuracy_difference, unpack_hits
from finesyn.report.rows import effect_verdict, per_image_difference


@pytest.mark.parametrize("n", [1, 7, 8, 10_001])
def test_hits_survive_packing(n):
    hits = np.random.default_rng(n).random(n) < 0.3
    rec = pack_hits(hits, ids=np.arange(n))
    assert rec["n"] == n and np.array_equal(unpack_hits(rec), hits)
    assert len(rec["packbits_b64"]) <= 4 * math.ceil(math.ceil(n / 8) / 3)  # one bit per image


def test_paired_difference_hand_computed():
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0], dtype=bool)
    # d = [0, 1, 0, -1, 1]: mean 0.2, mean(d²) 0.6, se = sqrt((0.6 - 0.04) / 4) = 0.3741657
    d = paired_accuracy_difference(a, b)
    assert d["mean"] == pytest.approx(20.0, abs=1e-12)
    assert d["se"] == pytest.approx(37.41657, rel=1e-6)
    assert d["half_width"] == pytest.approx(1.959964 * 37.41657, rel=1e-6)
    assert (d["only_a"], d["only_b"], d["n_images"]) == (2, 1, 5)
    assert d["mcnemar_p"] == pytest.approx(1.0)  # 2 vs 1 discordant: P(X <= 1 or X >= 2 | Bin(3, 1/2)) = 1


def test_mcnemar_is_the_two_sided_binomial_on_the_discordant_images():
    a = np.array([1] * 5 + [0] * 20, dtype=bool)
    b = np.zeros(25, dtype=bool)
    assert paired_accuracy_difference(a, b)["mcnemar_p"] == pytest.approx(2 * 0.5**5, abs=1e-15)


def test_pairing_removes_the_shared_images_from_the_error():
    """Two encoders that agree on all but 2 % of 10,000 images: the paired SE is about 0.14 points,
    while two independent binomial errors at 50 % would add to 0.71."""
    rng = np.random.default_rng(0)
    a = rng.random(10_000) < 0.5
    b = a.copy()
    flip = rng.choice(10_000, 200, replace=False)
    b[flip] = ~b[flip]
    d = paired_accuracy_difference(a, b)
    assert d["se"] == pytest.approx(100 * math.sqrt(0.02 - (d["mean"] / 100) ** 2) / math.sqrt(9_999), rel=1e-9)
    assert d["se"] < 0.15


def _row(experiment: str, hits, ids) -> dict:
    return {"dataset": "toy", "experiment": experiment, "seeds": [0], "hits": [pack_hits(hits, ids)]}


def test_per_image_difference_pairs_only_hits_of_the_same_test_images():
    ids = np.arange(200)
    a, b = np.arange(200) % 2 == 0, np.arange(200) % 4 == 0
    e = per_image_difference(_row("m", a, ids), _row("b", b, ids))
    assert e["mean"] == pytest.approx(25.0) and e["over"] == "images" and e["n_images"] == 200
    assert per_image_difference(_row("m", a, ids), _row("b", b, ids[::-1])) is None  # other order: not paired
    assert per_image_difference(_row("m", a, ids), {"hits": [None]}) is None


@pytest.mark.parametrize(
    "mean, half, verdict",
    [(2.0, 0.5, "helps"), (-2.0, 0.5, "hurts"), (0.1, 0.6, "no effect of 1 point or more"), (0.5, 1.0, "undecided")],
)
def test_the_verdict_follows_the_decision_rules(mean, half, verdict):
    e = {"dataset": "toy", "module": "m", "baseline": "b", "metric": "linear top-1", "n": 3, "mean": mean, "half_width": half}
    assert verdict in effect_verdict(e) and "over 3 training seeds" in effect_verdict(e)

import numpy as np
import pytest

from finesyn.eval.knn import knn_accuracy

# One close neighbour of class "near" (sim 1) and two farther ones of class "far" (sim 0.6).
TRAIN = np.array([[1, 0], [0.6, 0.8], [0.6, -0.8]], np.float32)
TRAIN_Y = np.array([7, 42, 42])
TEST = np.array([[2, 0]], np.float32)  # scale must not matter (cosine)


def test_weighting_decides_against_majority():
    # T = 0.07: e^(1/T) >> 2 e^(0.6/T) -> the near class wins although outnumbered
    sharp = knn_accuracy(TRAIN, TRAIN_Y, TEST, [7], ks=(1, 3), temperature=0.07)
    assert sharp["top1_k1"] == 100 and sharp["top1_k3"] == 100
    # T = 1: e^1 = 2.72 < 2 e^0.6 = 3.64 -> the majority wins at k = 3
    flat = knn_accuracy(TRAIN, TRAIN_Y, TEST, [7], ks=(1, 3), temperature=1.0)
    assert flat["top1_k1"] == 100 and flat["top1_k3"] == 0


def test_k_capped_at_train_size():
    out = knn_accuracy(TRAIN, TRAIN_Y, TEST, [42], ks=(200,), temperature=1.0)
    assert out["k_effective"] == {"200": 3} and out["top1_k200"] == 100


def reference(tr, ytr, te, k, t):
    tr = tr / np.linalg.norm(tr, axis=1, keepdims=True)
    te = te / np.linalg.norm(te, axis=1, keepdims=True)
    classes = np.unique(ytr)
    preds = []
    for s in te @ tr.T:
        nn = np.lexsort((np.arange(len(s)), -s))[:k]
        votes = [np.exp(s[nn] / t)[ytr[nn] == c].sum() for c in classes]
        preds.append(classes[int(np.argmax(votes))])
    return np.array(preds)


@pytest.mark.parametrize("chunk", [5, 4096])
def test_matches_bruteforce(chunk):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 12))
    ytr, yte = rng.integers(0, 6, 300), rng.integers(0, 6, 80)
    tr = (centers[ytr] + 1.5 * rng.standard_normal((300, 12))).astype(np.float32)
    te = (centers[yte] + 1.5 * rng.standard_normal((80, 12))).astype(np.float32)
    out = knn_accuracy(tr, ytr, te, yte, ks=(1, 10, 50), temperature=0.1, chunk_size=chunk)
    for k in (1, 10, 50):
        acc = 100 * np.mean(reference(tr, ytr, te, k, 0.1) == yte)
        assert out[f"top1_k{k}"] == pytest.approx(acc)
    assert 20 < out["top1_k10"] < 100  # non-trivial case


def test_small_temperature_does_not_overflow():
    out = knn_accuracy(TRAIN, TRAIN_Y, TEST, [7], ks=(3,), temperature=1e-4)
    assert out["top1_k3"] == 100


def test_tied_neighbours_taken_by_lower_train_index():
    tr = np.array([[1, 0], [1, 0], [0, 1]], np.float32)  # items 0 and 1 tie for every query
    q = np.array([[1, 0.1]], np.float32)
    assert knn_accuracy(tr, [5, 3, 3], q, [5], ks=(1, 3))["top1_k1"] == 100
    assert knn_accuracy(tr, [3, 5, 3], q, [5], ks=(1, 3))["top1_k1"] == 0

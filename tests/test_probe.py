import time

import numpy as np
import pytest

from finesyn.eval.probe import lbfgs_probe, stratified_split

N_CLS, N_TRAIN = 10, 1500


@pytest.fixture(scope="module")
def feats():
    """2,000 x 512 Gaussian classes, overlapping enough that accuracy is well below 100 %."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((N_CLS, 512)) * 0.012
    y = rng.integers(0, N_CLS, 2000)
    x = (centers[y] + rng.standard_normal((2000, 512)) * 3 / np.sqrt(512)).astype(np.float32)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


@pytest.fixture(scope="module")
def result(feats):
    t = time.perf_counter()
    out = lbfgs_probe(*feats, num_classes=N_CLS)
    out["_seconds"] = time.perf_counter() - t
    return out


def test_fast_and_nontrivial(result):
    assert result["_seconds"] < 10, "2,000 x 512 x 10 classes must take a few seconds"
    assert 30 < result["top1"] < 95
    assert result["top1"] <= result["top5"]
    assert len(result["per_class_top1"]) == N_CLS
    assert result["n_val"] == pytest.approx(0.2 * N_TRAIN, abs=N_CLS)


@pytest.mark.parametrize("l2", ["chosen", 1e-5])
def test_agrees_with_sklearn(feats, result, l2):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    xtr, ytr, xte, yte = feats
    ours = result if l2 == "chosen" else lbfgs_probe(*feats, num_classes=N_CLS, l2_grid=(l2,))
    l2 = ours["l2"]
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    clf = LogisticRegression(C=1.0 / (l2 * N_TRAIN), max_iter=2000, tol=1e-6)
    with threadpool_limits(1):  # tiny problem: BLAS threads only add overhead
        clf.fit(norm(xtr), ytr)
    sk_top1 = 100 * np.mean(clf.predict(norm(xte)) == yte)
    assert abs(ours["top1"] - sk_top1) <= 1.0


def test_l2_selected_without_test_labels(feats, result):
    xtr, ytr, xte, yte = feats
    perm = np.random.default_rng(1).permutation(yte)
    other = lbfgs_probe(xtr, ytr, xte, perm, num_classes=N_CLS)
    assert other["l2"] == result["l2"]
    assert other["val_top1"] == result["val_top1"]
    # also independent of the test features: select with garbage test features
    garbage = lbfgs_probe(xtr, ytr, -xte[::-1], yte, num_classes=N_CLS, l2_grid=(1e-4, 1e-2))
    clean = lbfgs_probe(xtr, ytr, xte, yte, num_classes=N_CLS, l2_grid=(1e-4, 1e-2))
    assert garbage["val_top1"] == clean["val_top1"] and garbage["l2"] == clean["l2"]


def test_l2_grid_matters_and_is_chosen_by_val(result):
    accs = {r["l2"]: r["top1"] for r in result["val_top1"]}
    assert result["l2"] == max(accs, key=lambda v: (accs[v], v))
    assert max(accs.values()) - min(accs.values()) > 5  # grid spans under- and over-regularised


def test_deterministic(feats):
    a = lbfgs_probe(*feats, num_classes=N_CLS, l2_grid=(1e-3,), seed=3)
    b = lbfgs_probe(*feats, num_classes=N_CLS, l2_grid=(1e-3,), seed=3)
    assert a == b


def test_stratified_split():
    y = np.repeat(np.arange(4), [10, 5, 2, 1])
    m = stratified_split(y, 0.2, seed=0)
    assert [int(m[y == c].sum()) for c in range(4)] == [2, 1, 0, 0]  # singleton stays in train
    assert not np.array_equal(m, stratified_split(y, 0.2, seed=1))
    np.testing.assert_array_equal(m, stratified_split(y, 0.2, seed=0))


def test_label_range_checked(feats):
    xtr, ytr, xte, yte = feats
    with pytest.raises(ValueError):
        lbfgs_probe(xtr, ytr, xte, yte + N_CLS, num_classes=N_CLS)

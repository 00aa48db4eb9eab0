"""Fast linear probe: L-BFGS multinomial logistic regression on cached frozen features.

The L2 strength is model selection, so it is chosen on a validation split carved from train;
the test set is scored exactly once, after the refit (paper notes, "Evaluation protocols").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from finesyn.eval.paired import pack_hits
from finesyn.eval.retrieval import normalize

# For unit-norm features l2 >= 0.1 already collapses to constant predictions; sklearn's default
# C = 1 is l2 = 1 / n_train (1e-3 .. 1e-5 for typical datasets), mid-grid.
DEFAULT_L2_GRID = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
# Below this many multiply-adds per matmul (n x dim x classes) a single intra-op thread is faster:
# thread hand-off dominates, and on a busy machine spinning workers slow each fit ~10x.
SINGLE_THREAD_BELOW = 1 << 26


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask: round(val_fraction * n_c) per class, >= 1 left in train."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]  # grouped by class, random within
    _, inv, counts = np.unique(y[order], return_inverse=True, return_counts=True)
    rank_in_class = np.arange(len(y)) - (np.cumsum(counts) - counts)[inv]
    n_val = np.minimum(np.round(val_fraction * counts), counts - 1)
    mask = np.zeros(len(y), dtype=bool)
    mask[order[rank_in_class < n_val[inv]]] = True
    return mask


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int, init=None):
    """Minimise mean cross-entropy + (l2/2)||W||^2 (bias unpenalised), full-batch L-BFGS.

    Convex, with a unique optimum in W for l2 > 0: ``init`` (warm start) only changes speed.
    """
    if init is None:
        init = (torch.zeros(x.shape[1], num_classes, dtype=x.dtype), torch.zeros(num_classes, dtype=x.dtype))
    w, b = (t.clone().requires_grad_(True) for t in init)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_linear(train_feats: np.ndarray, train_labels: np.ndarray, num_classes: int, l2: float, max_iter: int = 300):
    """The probe's final fit at a chosen l2 (e.g. the one probe.meta.json records): (W (d,C), b (C,))
    on the L2-normalised features, for reading the probe back (its Grad-CAM)."""
    x = torch.from_numpy(normalize(train_feats))
    return _fit(x, torch.from_numpy(np.asarray(train_labels, dtype=np.int64)), num_classes, l2, max_iter)


def _logits(x: torch.Tensor, wb) -> torch.Tensor:
    return x @ wb[0] + wb[1]


def lbfgs_probe(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 300,
) -> dict:
    """Train-only model selection of the L2 strength, refit on all train, score test once.

    Objective: mean cross-entropy + (l2/2)||W||^2 on L2-normalised features, which equals
    scikit-learn's LogisticRegression with C = 1 / (l2 * n_train). Selection: highest val
    top-1; ties go to the larger l2 (the simpler model). The grid is swept from strong to weak
    l2, each fit warm-started from the previous (zero init first). Deterministic: full batch,
    split drawn from ``seed``. Labels are integers in [0, num_classes).
    """
    ytr, yte = np.asarray(train_labels), np.asarray(test_labels)
    for name, y in (("train", ytr), ("test", yte)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes})")
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be in (0, 1)")
    if not l2_grid or min(l2_grid) < 0:
        raise ValueError("l2_grid must be non-empty and non-negative")
    xtr = torch.from_numpy(normalize(train_feats))
    xte = torch.from_numpy(normalize(test_feats))
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("features and labels differ in length")

    small = xtr.shape[0] * xtr.shape[1] * num_classes < SINGLE_THREAD_BELOW
    with _torch_threads(1 if small else torch.get_num_threads()):
        return _select_and_fit(xtr, ytr, xte, yte, num_classes, l2_grid, val_fraction, seed, max_iter)


def _select_and_fit(xtr, ytr, xte, yte, num_classes, l2_grid, val_fraction, seed, max_iter):
    """Sweep l2 on the train/val split, refit on all train, then touch the test set once."""
    ytr_t = torch.from_numpy(ytr.astype(np.int64))
    val = stratified_split(ytr, val_fraction, seed)
    if not val.any():
        raise ValueError("validation split is empty: too few samples per class")
    vm = torch.from_numpy(val)
    val_acc, fits, wb = {}, {}, None
    for l2 in sorted(set(map(float, l2_grid)), reverse=True):  # strong -> weak, warm-started
        wb = fits[l2] = _fit(xtr[~vm], ytr_t[~vm], num_classes, l2, max_iter, wb)
        pred = _logits(xtr[vm], wb).argmax(1)
        val_acc[l2] = 100.0 * (pred == ytr_t[vm]).double().mean().item()
    # max val accuracy; among equals the largest l2
    l2 = max(val_acc, key=lambda v: (val_acc[v], v))

    wb = _fit(xtr, ytr_t, num_classes, l2, max_iter, fits[l2])
    logits = _logits(xte, wb)
    yte_t = torch.from_numpy(yte.astype(np.int64))
    top = logits.topk(min(5, num_classes), dim=1).indices
    hit1 = (top[:, 0] == yte_t).numpy()
    hit5 = (top == yte_t[:, None]).any(1).numpy()
    n_c = np.bincount(yte, minlength=num_classes)
    hit_c = np.bincount(yte, hit1, minlength=num_classes)
    per_class = [float(100.0 * h / n) if n else None for h, n in zip(hit_c, n_c)]
    return {
        "top1": float(100.0 * hit1.mean()),
        "top5": float(100.0 * hit5.mean()),
        "per_class_top1": per_class,
        "test_hits": pack_hits(hit1),  # per image, for paired comparisons of two encoders (eval/paired.py)
        "l2": l2,
        "val_top1": [{"l2": v, "top1": a} for v, a in sorted(val_acc.items())],
        "n_train": int(len(ytr)),
        "n_val": int(val.sum()),
        "n_test": int(len(yte)),
        "protocol": (
            "lbfgs multinomial logistic regression (bias) on L2-normalised features, "
            "loss = mean CE + (l2/2)||W||^2; l2 chosen by top-1 on a stratified "
            f"{val_fraction:g} validation split of train (seed {seed}), refit on all train; "
            "test scored once"
        ),
    }

"""Weighted kNN classification of frozen features (InstDisc / DINO protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finesyn.eval.retrieval import GPU_MAX_K, check_device, faiss_index, normalize, search


def knn_accuracy(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    device: str = "auto",
    chunk_size: int = 4096,
) -> dict:
    """Top-1 accuracy (percent) of a similarity-weighted kNN vote, for each k.

    Cosine similarity of L2-normalised features; each of the k nearest train items votes for
    its class with weight exp(sim / T) (sharper than a plain majority: near neighbours count
    more). k is capped at the train size. Equal-similarity neighbours are taken by lower train
    index; an exact vote tie goes to the smallest class label.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    check_device(device)
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    tr, te = normalize(train_feats), normalize(test_feats)
    if len(tr) != len(train_labels) or len(te) != len(test_labels):
        raise ValueError("features and labels differ in length")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(f"train dim {tr.shape[1]} != test dim {te.shape[1]}")
    classes, ytr = np.unique(np.asarray(train_labels), return_inverse=True)
    yte = np.asarray(test_labels)
    n_cls = len(classes)
    k_eff = {k: min(k, len(tr)) for k in ks}
    kmax = max(k_eff.values())

    index = faiss_index(tr.shape[1], device if kmax <= GPU_MAX_K else "cpu")
    index.add(tr)
    correct = dict.fromkeys(ks, 0)
    for s in range(0, len(te), chunk_size):
        sim, nn = search(index, te[s : s + chunk_size], kmax)
        # Shifting by the row max leaves the vote unchanged and avoids overflow for small T.
        w = np.exp((sim.astype(np.float64) - sim[:, :1]) / temperature)
        # Flattened (row, class) bins so one bincount casts all votes of the chunk.
        bins = np.arange(len(nn))[:, None] * n_cls + ytr[nn]
        for k in ks:
            kk = k_eff[k]
            votes = np.bincount(bins[:, :kk].ravel(), w[:, :kk].ravel(), minlength=len(nn) * n_cls)
            pred = classes[votes.reshape(len(nn), n_cls).argmax(1)]
            correct[k] += int((pred == yte[s : s + chunk_size]).sum())
    out: dict[str, Any] = {f"top1_k{k}": 100.0 * correct[k] / len(te) for k in ks}
    out.update(
        k_effective={str(k): k_eff[k] for k in ks},
        temperature=temperature,
        n_train=len(tr),
        n_test=len(te),
        similarity="cosine",
        weighting="exp(sim/T)",
    )
    return out

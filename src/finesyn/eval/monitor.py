"""The learning monitor: a kNN top-1 on a validation split carved from the train split, during pretraining.

It answers "does this run learn, and when?" without touching the test set: `carve_validation`
holds a stratified fraction of the train split out of pretraining, and `KnnMonitor` scores the
current encoder by a cosine kNN vote of those held-out images against a bank of the remaining
train images (`bank_subset`; the probe's own protocol, on frozen centre-crop features).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from finesyn.config import monitor_held_out
from finesyn.eval.features import extract_features
from finesyn.eval.knn import knn_accuracy
from finesyn.models.backbone import Backbone


def carve_validation(
    train_idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int, class_names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val): `fraction` of each class of `train_idx` (at least one image per class) held out, seeded.
    A class with a single train image is kept whole for training, with a warning naming it: holding
    its one image out would leave the class nothing to train on (it used to stop the run).

    The split depends only on the data and `seed` (the dataset's), so every experiment and seed of a
    grid trains on the same images and is monitored on the same held-out ones.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"pretrain.monitor_val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 2024])
    train_idx = np.asarray(train_idx)
    y = np.asarray(labels)[train_idx]
    val = []
    for c in np.unique(y):
        members = train_idx[y == c]
        if len(members) < 2:
            name = repr(class_names[c]) if class_names is not None else str(c)
            warnings.warn(
                f"class {name} has 1 train image: it stays in pretraining and is not monitored "
                "(pretrain.monitor_val_fraction holds out images of classes with at least 2)",
                UserWarning,
                stacklevel=2,
            )
            continue
        n_val = monitor_held_out(len(members), fraction)
        val.append(rng.choice(members, n_val, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else train_idx[:0]
    return np.setdiff1d(train_idx, val_idx), val_idx


def bank_subset(fit_idx: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """The monitor's kNN bank: `per_class` images of each class of `fit_idx` (all of a smaller class), seeded.

    The bank is what a monitor point extracts besides the held-out images; the default's 50 per class
    make a point ~3x cheaper than the whole train split, and the vote of 20 neighbours stays defined.
    0 keeps every image. Like the split, it depends only on the data and `seed`.
    """
    fit_idx = np.asarray(fit_idx)
    if per_class == 0:
        return fit_idx
    rng = np.random.default_rng([seed, 2025])
    y = np.asarray(labels)[fit_idx]
    picks = [rng.choice(m, min(per_class, len(m)), replace=False) for m in (fit_idx[y == c] for c in np.unique(y))]
    return np.sort(np.concatenate(picks))


def knn_device(pretrain_device: str) -> str:
    """The kNN vote's device (finesyn.eval.retrieval.DEVICES) for a `pretrain.device` choice.

    The two name devices differently: "cuda" means the GPU to torch, but the vote runs in FAISS, which
    may be a CPU-only build on a GPU machine, so CUDA maps to "auto" (GPU FAISS where installed);
    MPS has no FAISS backend, so it votes on the CPU.
    """
    return {"auto": "auto", "cuda": "auto", "cpu": "cpu", "mps": "cpu"}[pretrain_device]


@dataclass
class KnnMonitor:
    """Callable on a backbone -> {"knn<k>_top1": percent}: held-out images voted by their k nearest fit images."""

    images: np.ndarray
    labels: np.ndarray
    fit_idx: np.ndarray
    val_idx: np.ndarray
    crop_size: int
    k: int = 20
    device: str = "auto"
    channels_last: bool = False

    def __call__(self, backbone: Backbone) -> dict:
        feats = [
            extract_features(backbone, self.images, idx, self.crop_size, device=self.device, channels_last=self.channels_last)
            for idx in (self.fit_idx, self.val_idx)
        ]
        fit_y, val_y = self.labels[self.fit_idx], self.labels[self.val_idx]
        acc = knn_accuracy(feats[0], fit_y, feats[1], val_y, ks=(self.k,), device=knn_device(self.device))
        return {f"knn{self.k}_top1": acc[f"top1_k{self.k}"]}


def monitor_split(ds, cfg, crop: int, split_seed: int):
    """(images pretraining sees, the learning monitor or None): `pretrain.monitor_val_fraction` of each
    class of the train split is held out of pretraining (for every method, so rows stay comparable)."""
    train_idx = ds.indices("train")
    if cfg.monitor_val_fraction == 0:
        return train_idx, None
    fit, val = carve_validation(train_idx, ds.labels, cfg.monitor_val_fraction, split_seed, ds.classes)
    bank = bank_subset(fit, ds.labels, cfg.monitor_bank_per_class, split_seed)
    monitor = KnnMonitor(ds.images, ds.labels, bank, val, crop, k=cfg.monitor_k, device=cfg.device, channels_last=cfg.channels_last)
    return fit, monitor if cfg.monitor_every_steps > 0 else None

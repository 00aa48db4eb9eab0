"""The prepared-dataset reader: what pretrain, extract and the report open.

Apart from the writer (`cache.py`: decoding, resizing, the dataset indexers, bit depths) so that a
stage that only reads a prepared dataset does not depend on how one is made: an edit to an
indexer reruns `prepare`, and nothing below it unless the prepared bytes change.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from finesyn.errors import UserError

__all__ = ["CacheError", "PreparedDataset", "open_cache", "IMAGES_FILE", "MANIFEST_FILE", "META_FILE", "PROGRESS_FILE"]

IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.csv"
META_FILE = "meta.json"
PROGRESS_FILE = "prepare.progress.json"
MANIFEST_COLUMNS = ("index", "id", "label", "split", "source")


SPLITS = ("train", "test", "unlabelled")


class CacheError(UserError, ValueError):
    """A prepared-dataset directory is missing, unfinished or inconsistent."""


@dataclass
class PreparedDataset:
    path: Path
    images: np.ndarray  # uint8 (N, S, S, 3) memmap
    labels: np.ndarray  # int64 (N,); -1 for the unlabelled images
    splits: np.ndarray  # str (N,): "train" | "test" | "unlabelled" (pretraining of the label-free methods only)
    ids: list[str]
    sources: list[str]
    classes: list[str]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    def indices(self, split: str) -> np.ndarray:
        """Row indices of ``split`` ("train", "test" or "unlabelled"), ascending."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return np.flatnonzero(self.splits == split)

    def pretraining_indices(self, fit: np.ndarray, uses_labels: bool) -> np.ndarray:
        """What a method pretrains on: `fit` (the train split less the monitor's held-out images), and the
        unlabelled images unless the method reads labels (the supervised reference)."""
        return fit if uses_labels else np.concatenate([fit, self.indices("unlabelled")])


def open_cache(path: str | os.PathLike[str], *, mmap_mode: Literal["r", "c"] = "r") -> PreparedDataset:
    """Open a complete prepared-dataset directory (images memory-mapped read-only)."""
    d = Path(path)

    def err(msg: str) -> CacheError:
        return CacheError(f"prepared dataset {d}: {msg}")

    if not d.is_dir():
        raise err("directory does not exist")
    meta_path = d / META_FILE
    if not meta_path.is_file():
        hint = " (an unfinished prepare: run it again to resume)" if (d / PROGRESS_FILE).exists() else ""
        raise err(f"no {META_FILE}: the cache is unfinished or not a prepared dataset{hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise err(f"{META_FILE} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        raise err(f'{META_FILE} lacks "complete": true; the cache is unfinished and must not be used (re-run prepare)')
    for key in ("classes", "image_size", "counts"):
        if key not in meta:
            raise err(f"{META_FILE} has no {key!r}")
    try:
        images = np.load(d / IMAGES_FILE, mmap_mode=mmap_mode)
    except FileNotFoundError:
        raise err(f"missing {IMAGES_FILE}") from None
    except Exception as e:
        raise err(f"cannot read {IMAGES_FILE}: {type(e).__name__}: {e}") from e
    s = int(meta["image_size"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (s, s, 3):
        raise err(f"{IMAGES_FILE} is {images.dtype} {images.shape}, expected uint8 (N, {s}, {s}, 3)")

    try:
        with open(d / MANIFEST_FILE, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except FileNotFoundError:
        raise err(f"missing {MANIFEST_FILE}") from None
    if header is None or tuple(header) != MANIFEST_COLUMNS:
        raise err(f"{MANIFEST_FILE} header is {header}, expected {list(MANIFEST_COLUMNS)}")
    if any(len(r) != len(MANIFEST_COLUMNS) for r in rows):
        raise err(f"{MANIFEST_FILE} has malformed rows")
    n = images.shape[0]
    counts = meta["counts"]
    n_meta = sum(int(counts.get(s, 0)) for s in SPLITS)
    if not (len(rows) == n == n_meta):
        raise err(
            f"files disagree in length: {IMAGES_FILE} has {n} images, {MANIFEST_FILE} has "
            f"{len(rows)} rows, {META_FILE} counts sum to {n_meta}"
        )
    try:
        index = np.array([int(r[0]) for r in rows], dtype=np.int64)
        labels = np.array([int(r[2]) for r in rows], dtype=np.int64)
    except ValueError as e:
        raise err(f"{MANIFEST_FILE}: non-integer index/label: {e}") from e
    if not np.array_equal(index, np.arange(n)):
        raise err(f"{MANIFEST_FILE}: 'index' column is not 0..{n - 1}")
    classes = [str(c) for c in meta["classes"]]
    splits = np.array([r[3] for r in rows], dtype=str)
    bad_splits = set(splits.tolist()) - set(SPLITS)
    if bad_splits:
        raise err(f"{MANIFEST_FILE}: unknown splits {sorted(bad_splits)}")
    unlabelled = splits == "unlabelled"
    if n and ((labels[~unlabelled] < 0).any() or (labels[~unlabelled] >= len(classes)).any() or (labels[unlabelled] != -1).any()):
        raise err(f"{MANIFEST_FILE}: labels outside [0, {len(classes)}) (or not -1 for an unlabelled image)")
    got = {s: int((splits == s).sum()) for s in SPLITS}
    if got != {s: int(counts.get(s, 0)) for s in SPLITS}:
        raise err(f"{MANIFEST_FILE} split counts {got} disagree with {META_FILE} counts {counts}")
    return PreparedDataset(
        path=d,
        images=images,
        labels=labels,
        splits=splits,
        ids=[r[1] for r in rows],
        sources=[r[4] for r in rows],
        classes=classes,
        meta=meta,
    )

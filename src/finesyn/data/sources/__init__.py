"""Indexers for real datasets in their official on-disk layouts.

``index_dataset(kind, root, **options) -> DatasetIndex``; ``SOURCES[kind]`` is the indexer.
Common options: ``strict`` (count/split mismatches with the official numbers raise instead of
warning) and ``check_files`` (verify every listed image file exists). ``imagefolder`` also takes
``split_ratio``, ``split_seed``, ``name`` and ``expected_counts``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import (
    IMAGE_EXTENSIONS,
    DatasetCountWarning,
    DatasetIndex,
    DatasetLayoutError,
    IndexedImage,
    Split,
)
from .cub200 import index_cub200
from .fgvc_aircraft import index_fgvc_aircraft
from .imagefolder import index_imagefolder
from .stanford_cars import index_stanford_cars
from .unlabelled import UNLABELLED, index_unlabelled

SOURCES: dict[str, Callable[..., DatasetIndex]] = {
    "cub200": index_cub200,
    "stanford_cars": index_stanford_cars,
    "fgvc_aircraft": index_fgvc_aircraft,
    "imagefolder": index_imagefolder,
}


def index_dataset(kind: str, root: str | Path, **options: Any) -> DatasetIndex:
    """Index the dataset of layout ``kind`` at ``root`` (see ``SOURCES``)."""
    try:
        indexer = SOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {sorted(SOURCES)}") from None
    return indexer(root, **options)


__all__ = [
    "SOURCES",
    "index_dataset",
    "index_unlabelled",
    "UNLABELLED",
    "DatasetIndex",
    "IndexedImage",
    "DatasetLayoutError",
    "DatasetCountWarning",
    "IMAGE_EXTENSIONS",
    "Split",
]

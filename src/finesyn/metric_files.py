"""A stage's result split the DVC way: the numbers `dvc metrics` compares, and the record around them.

DVC shows and diffs every leaf of a declared metrics file, so a metrics file holds only the headline
numbers (top-1, Rank-k, mAP, kNN); the protocol, hashes, library versions, timings, the selected L2
and the per-class numbers go to the sibling meta file (`RunPaths.meta_of`), a plain output.
"""

from __future__ import annotations

import copy
import math
from typing import Any

KeyPath = tuple[str, ...]

PROBE_KEYS: list[KeyPath] = [("top1",), ("top5",)]
# Percentages to 6 decimals: far finer than anything the protocol resolves (an accuracy on 10,000 test images
# moves in steps of 0.01), coarse enough to drop float noise (20.810000000000002 is written 20.81).
DECIMALS = 6


def retrieval_keys(ks: list[int], knn_ks: list[int], map_at_r: bool) -> list[KeyPath]:
    """retrieval.json's numbers under the retrieve settings: Rank-k, mAP (and mAP@R), kNN top-1 per k."""
    return [(f"rank{k}",) for k in ks] + [("mAP",)] + ([("mAP@R",)] if map_at_r else []) + [("knn", f"top1_k{k}") for k in knn_ks]


def split_record(record: dict, keys: list[KeyPath], source: str) -> tuple[dict, dict]:
    """(metrics: the numbers at `keys`, nested as in `record`; meta: `record` without them).

    A key missing from `record`, or not a finite number there, is an error naming `source` and the key:
    a metrics file never holds a placeholder. The numbers are rounded to DECIMALS."""
    metrics: dict[str, Any] = {}
    meta = copy.deepcopy(record)
    for path in keys:
        parent: Any = meta
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{source}: {'.'.join(path)} is {value!r}, not a finite number")
        del parent[path[-1]]
        target = metrics
        for k in path[:-1]:
            target = target.setdefault(k, {})
        target[path[-1]] = round(value, DECIMALS)
    return metrics, meta

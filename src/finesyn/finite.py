"""Finiteness of weights and statistics: a diverged run must not pass as trained.

The loss guard sees only the loss. With too high a learning rate BatchNorm's running statistics
overflow to inf while the loss stays finite (it is computed with batch statistics), so a checkpoint,
encoder.pt and the features extracted from it would all look like a result. Every writer and reader of
weights asks this module first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def nonfinite_tensors(state: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a (nested) state dict holding inf or NaN."""
    bad = []
    for name, value in state.items():
        if isinstance(value, Mapping):
            bad += nonfinite_tensors(value, f"{prefix}{name}.")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad.append(f"{prefix}{name}")
    return bad


def named(bad: list[str], limit: int = 3) -> str:
    """'a, b, c and 4 more' for a message."""
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return ", ".join(bad[:limit]) + more

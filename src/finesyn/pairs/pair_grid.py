"""Fig. 4's picture of a run's pairs, written by the pretrain stage as pairs.png and read by the report."""

from __future__ import annotations

import io

import torch


def pair_grid_png(images, n: int = 8) -> bytes:
    """Fig. 4's grid, one row per sample: the input view, g(h), g(h̃) and |g(h) − g(h̃)| (mean over RGB, scaled so
    that the grid's largest difference is white): where the pair differs, which the eye misses between two blurry images."""
    from torchvision.utils import make_grid, save_image

    from finesyn.data.augment import denormalize

    x1, xa, xb = (denormalize(t[:n].float()) for t in images)
    diff = (xa - xb).abs().mean(dim=1, keepdim=True)
    diff = (diff / diff.max().clamp_min(1e-8)).expand_as(xa)
    grid = make_grid(torch.stack([x1, xa, xb, diff], dim=1).flatten(0, 1), nrow=4, padding=2, pad_value=1.0)
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    return buf.getvalue()

"""Which dimensions of h are non-discriminative: the ones to perturb.

Each criterion returns a boolean mask over the d dimensions of h. Ties are broken by the
lower dimension index (stable sort), so the selection is deterministic.
"""

from __future__ import annotations

import torch


def lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mask of the round(fraction·d) lowest scores."""
    d = scores.numel()
    k = min(d, int(round(fraction * d)))
    mask = torch.zeros(d, dtype=torch.bool, device=scores.device)
    if k:
        order = torch.sort(scores, stable=True).indices
        mask[order[:k]] = True
    return mask


def gradcam_importance(h: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
    """s_j = mean_i(h_ij · -∂L_C/∂h_ij): Grad-CAM's weight × activation per sample, batch-averaged.

    Averaging the gradient over the batch first (mean(-g)·mean(h)) would be degenerate for every
    projector that starts with Linear→BatchNorm (SimSiam, BYOL, SimCLR): BN makes the input
    gradient sum to zero over the batch, so that weight is 0 for every dimension.
    """
    return (-grad_h * h).mean(0)


def gradcam_scores(importance: torch.Tensor, rank: str) -> torch.Tensor:
    """What `lowest` ranks for the Grad-CAM criterion: |s_j| ("abs", the default) or s_j ("signed").

    s_j is, to first order, how much L_C rises when dimension j is zeroed (ΔL ≈ -g_j·h_j). A large
    *negative* s_j is a dimension whose removal would lower L_C a lot: it influences the objective
    as strongly as a large positive one. "Least important" therefore means smallest |s_j|; ranking the
    signed s_j (Grad-CAM's literal lowest) selects exactly those strongly negative dimensions. On a
    default MoCo v2 checkpoint 228 / 512 dimensions are negative and the 128 lowest signed overlap
    0 / 128 with the 128 lowest |s_j| (docs/findings.md). "signed" is kept for the ablation.
    """
    if rank == "abs":
        return importance.abs()
    if rank == "signed":
        return importance
    raise ValueError(f"synth.gradcam_rank must be 'abs' or 'signed', got {rank!r}")


def random_mask(d: int, fraction: float, g: torch.Generator, device) -> torch.Tensor:
    return lowest(torch.rand(d, generator=g, device=device), fraction)


def combine(masks: list[torch.Tensor], how: str) -> torch.Tensor:
    out = masks[0].clone()
    for m in masks[1:]:
        out = out | m if how == "union" else out & m
    return out

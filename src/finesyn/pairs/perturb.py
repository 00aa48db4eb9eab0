"""Perturb only the selected dimensions of h; every other dimension stays bit-identical."""

from __future__ import annotations

import torch


def perturb(
    h: torch.Tensor, mask: torch.Tensor, kind: str, beta: float, mean: torch.Tensor, std: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """h: (n, d); mask: (d,) bool; mean/std: (d,) per-dimension statistics.

    gaussian_add:     h + β·σ_j·ε          (the notes' default)
    gaussian_replace: μ_j + β·σ_j·ε        (the value is replaced by noise of the dimension's scale)
    swap:             h[π(i), j]           (another sample's value; π a random cyclic shift, never the identity)
    """
    if kind == "gaussian_add":
        new = h + beta * std * torch.randn(h.shape, generator=g, device=h.device, dtype=h.dtype)
    elif kind == "gaussian_replace":
        new = mean + beta * std * torch.randn(h.shape, generator=g, device=h.device, dtype=h.dtype)
    elif kind == "swap":
        n = len(h)
        shift = int(torch.randint(1, max(n, 2), (1,), generator=g, device=h.device)) if n > 1 else 0
        new = h.roll(shift, dims=0)
    else:
        raise ValueError(f"unknown perturbation {kind!r}; expected gaussian_add | gaussian_replace | swap")
    return torch.where(mask, new, h)

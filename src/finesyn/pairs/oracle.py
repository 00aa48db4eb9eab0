"""The oracle pair: the module study's positive control.

The module's decoded pair (g(h), g(h̃)) is meant to be one image with its non-discriminative content
changed. The oracle makes that pair exactly, without a decoder, where a generator can: the embedded
dataset re-renders each training image with other images' background scenes and lighting
(`synthetic.render_with_scene_of`), and L_Cp is the method's loss between the step's first view of an
image and an augmented view of one of its re-renderings. If even this pair does not lift the probe
over the method alone, invariance to that nuisance does not pay at the budget, and no decoded pair can.

It stands in for `SynthPairs` in `pretrain(..., pair_module=)`: the same forward, SynthLosses with
L_R = 0 (there is no decoder) and every re-rendering drawn from the module's generator `g`, so an
oracle run sees the views and data order of its baseline of the same seed. One process only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from finesyn.data.augment import ssl_view
from finesyn.methods.base import SSLMethod, SSLOutput
from finesyn.pairs.module import SynthLosses, running_stats_kept


class OraclePairs(nn.Module):
    def __init__(self, twins: np.ndarray, rows: np.ndarray, augment, crop: int, pair_fraction: float):
        """`twins` (R, T, S, S, 3) uint8: T re-renderings of R images; `rows[dataset index]` is an image's
        row of `twins` (-1: none). `augment` (AugmentConfig) and `crop` make the re-rendering's view."""
        super().__init__()
        if twins.ndim != 5 or twins.shape[-1] != 3:
            raise ValueError(f"OraclePairs: twins must be (images, renderings, S, S, 3) uint8, got shape {twins.shape}")
        self.twins, self.rows = twins, np.asarray(rows)
        self.augment, self.crop, self.pair_fraction = augment, crop, pair_fraction

    def distribute(self, ctx) -> None:
        if ctx.enabled:
            raise ValueError("OraclePairs runs in one process only (the module study's control)")

    def forward(self, method: SSLMethod, out: SSLOutput, x1: torch.Tensor, g: torch.Generator, pairs: bool = True) -> SynthLosses:
        zero = x1.new_zeros((), dtype=torch.float32)
        none = torch.zeros(0, dtype=torch.bool, device=x1.device)
        if not pairs:
            return SynthLosses(zero, zero, 0, none, None)
        if method.indices is None:
            raise ValueError("OraclePairs needs the batch's dataset indices (method.set_indices)")
        n = max(2, math.ceil(self.pair_fraction * len(x1)))
        rows = self.rows[method.indices[:n].cpu().numpy()]
        if (rows < 0).any():
            raise ValueError(f"OraclePairs: {int((rows < 0).sum())} image(s) of the batch have no re-rendering")
        pick = torch.randint(self.twins.shape[1], (n,), generator=g, device=g.device).cpu().numpy()
        twin = torch.from_numpy(np.ascontiguousarray(self.twins[rows, pick])).to(x1.device)
        v_b = ssl_view(twin, self.augment, self.crop, g).to(x1.dtype)
        if x1.is_contiguous(memory_format=torch.channels_last):
            v_b = v_b.contiguous(memory_format=torch.channels_last)
        v_a = x1[:n]
        with running_stats_kept(method):  # re-rendered images move no running statistics, as decoded ones
            loss = method.ssl_loss(v_a, v_b, update_state=False).loss
        return SynthLosses(zero, loss, 0, none, (v_a.detach(), v_a.detach(), v_b.detach()))

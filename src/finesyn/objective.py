"""The paper's equation in one place: L = L_C + α·L_R + ν·L_Cp.

L_C is the SSL method's own loss on the two augmented views; the synthesized-pair module
(`finesyn.pairs`) adds L_R (g(h) reconstructs the first view) and L_Cp (the method's loss on the
decoded pair). ν = 0 (Fig. 5's α-only runs) means no pair at all: none is selected, decoded or
passed through the encoder, so decoded images never reach its BatchNorm statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from finesyn.methods import SSLMethod
from finesyn.pairs import SynthPairs


@dataclass
class StepLosses:
    total: torch.Tensor  # L, what the step minimises
    terms: dict[str, torch.Tensor]  # L_C, and L_R, L_Cp where the run has them (logged, checked for finiteness)
    n_selected: int  # dimensions the module perturbed (0 without pairs)
    pair_images: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # (x1, g(h), g(h̃)) of the pairs, detached


class Objective(nn.Module):
    """The step's loss as one module, so that DistributedDataParallel wraps a single forward."""

    def __init__(self, method: SSLMethod, synth: SynthPairs | None, alpha: float, nu: float):
        super().__init__()
        self.method, self.synth, self.alpha, self.nu = method, synth, alpha, nu

    @property
    def pairs(self) -> bool:
        """Whether the module makes pairs (L_Cp): with a module and ν > 0."""
        return self.synth is not None and self.nu > 0

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, g_synth: torch.Generator) -> StepLosses:
        out = self.method.ssl_loss(v1, v2)
        if self.synth is None:
            return StepLosses(out.loss, {"L_C": out.loss}, 0, None)
        s = self.synth(self.method, out, v1, g_synth, pairs=self.pairs)
        terms = {"L_C": out.loss, "L_R": s.recon}
        total = out.loss + self.alpha * s.recon
        if self.pairs:
            terms["L_Cp"] = s.pair
            total = total + self.nu * s.pair
        return StepLosses(total, terms, s.n_selected, s.images)

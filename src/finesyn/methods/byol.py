"""BYOL (Grill et al. 2020): online predictor regresses an EMA target's projection, no negatives."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||p/|p| - z/|z|||² = 2 - 2·cos(p, z), batch mean; z is the target (no gradient flows to it)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def cosine_momentum(base: float, progress: float) -> float:
    """tau = 1 - (1 - base)·(cos(pi·progress) + 1) / 2: base at progress 0, 1.0 at progress 1."""
    progress = min(max(progress, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@register("byol")
class BYOL(SSLMethod):
    """Online predictor regresses the EMA target's projection of the other view.

    Multi-process rule: SyncBN in the online and the target network (statistics over the global
    batch, as the paper's large-batch setup), nothing gathered: the loss is a mean of per-sample
    terms, each rank averages over its shard and DDP's gradient average gives the global mean.
    Parameters are identical on every rank after each step, so the EMA update needs no
    communication.
    """

    loss_kind = "2 − 2·cos"

    def __init__(self, backbone, proj_hidden_dim: int, proj_dim: int, pred_hidden_dim: int, base_momentum: float):
        super().__init__(backbone)
        self.projector_spec = {"dims": [backbone.dim, proj_hidden_dim, proj_dim]}  # Linear-BN-ReLU-Linear
        self.projector = mlp(**self.projector_spec)
        self.predictor = mlp([proj_dim, pred_hidden_dim, proj_dim])
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = base_momentum

    @classmethod
    def from_config(cls, backbone, cfg, num_train: int, num_classes: int | None = None) -> BYOL:
        m = cfg.methods.byol
        return cls(backbone, m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim, m.base_momentum)

    def momentum_at(self, progress: float) -> float:
        return cosine_momentum(self.base_momentum, progress)

    def ssl_loss(self, x1, x2, update_state=True) -> SSLOutput:
        # BYOL keeps no state besides the EMA target (updated in after_step), so update_state is unused.
        h1, h2 = self.backbone(x1), self.backbone(x2)
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(x1))
            t2 = self.target_projector(self.target_backbone(x2))
        loss = 0.5 * (regression_loss(p1, t2) + regression_loss(p2, t1))
        return SSLOutput(loss, h1)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        tau = self.momentum_at(progress)
        for online, target in ((self.backbone, self.target_backbone), (self.projector, self.target_projector)):
            for p_o, p_t in zip(online.parameters(), target.parameters()):
                p_t.mul_(tau).add_(p_o.detach(), alpha=1 - tau)
            for b_o, b_t in zip(online.buffers(), target.buffers()):
                b_t.copy_(b_o)  # BN running statistics follow the online network (as in mocov2)

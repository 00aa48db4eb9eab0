"""SimCLR (Chen et al. 2020): NT-Xent over the 2N views of a batch, in-batch negatives."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
    rank: int = 0,
) -> torch.Tensor:
    """NT-Xent (as lightly's NTXentLoss): mean over the 2N anchors of -log softmax of the positive.

    z1[i] and z2[i] are the two views of sample i (normalised here). Each anchor is scored by cosine
    similarity / T against the positive and the 2N-2 other views; itself is excluded.

    DDP hook: `gather(z)` returns the views of all ranks concatenated in rank order (with gradient,
    e.g. an all_gather that keeps autograd); the local samples then sit at rows rank*N .. rank*N+N-1,
    negatives become 2M-2 over the global batch M, and each rank averages over its own 2N anchors.
    With the default identity and rank 0 this is the single-process loss.
    """
    dt = torch.promote_types(z1.dtype, torch.float32)  # AMP's half types in float32 (exp of logits / T); float64 stays
    z1, z2 = F.normalize(z1.to(dt), dim=1), F.normalize(z2.to(dt), dim=1)
    n = len(z1)
    g1, g2 = gather(z1), gather(z2)
    pos = rank * n + torch.arange(n, device=z1.device)  # column of each local sample in the gathered views
    self_mask = torch.zeros(n, len(g1), dtype=torch.bool, device=z1.device)
    self_mask[torch.arange(n, device=z1.device), pos] = True
    # anchors of view 1: [sim to view 2 | sim to view 1 without itself]; the positive is column pos
    logits1 = torch.cat([z1 @ g2.T, (z1 @ g1.T).masked_fill(self_mask, float("-inf"))], dim=1)
    # anchors of view 2: [sim to view 1 | sim to view 2 without itself]
    logits2 = torch.cat([z2 @ g1.T, (z2 @ g2.T).masked_fill(self_mask, float("-inf"))], dim=1)
    logits = torch.cat([logits1, logits2]) / temperature
    return F.cross_entropy(logits, torch.cat([pos, pos]))


@register("simclr")
class SimCLR(SSLMethod):
    """NT-Xent with the other 2N-2 views of the batch as negatives.

    Multi-process rule: the projections of all ranks are gathered *with gradient* (each rank's
    anchors see the 2M-2 negatives of the global batch M, and the gradient w.r.t. a negative flows
    back to the rank that produced it), and BN is SyncBN (the paper's "global BN"). Each rank
    averages over its own 2N anchors; DDP's gradient average gives the global mean.
    """

    loss_kind = "NT-Xent (InfoNCE)"

    def __init__(self, backbone, proj_hidden_dim: int, proj_dim: int, temperature: float):
        super().__init__(backbone)
        self.projector_spec = {"dims": [backbone.dim, proj_hidden_dim, proj_dim]}  # Linear-BN-ReLU-Linear
        self.projector = mlp(**self.projector_spec)
        self.temperature = temperature

    @classmethod
    def from_config(cls, backbone, cfg, num_train: int, num_classes: int | None = None) -> SimCLR:
        m = cfg.methods.simclr
        return cls(backbone, m.proj_hidden_dim, m.proj_dim, m.temperature)

    def ssl_loss(self, x1, x2, update_state=True) -> SSLOutput:
        # In-batch negatives only: no state, so update_state is unused.
        h1, h2 = self.backbone(x1), self.backbone(x2)
        d = self.dist
        loss = nt_xent(self.projector(h1), self.projector(h2), self.temperature, gather=d.all_gather_with_grad, rank=d.rank)
        return SSLOutput(loss, h1)

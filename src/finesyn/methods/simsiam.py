"""SimSiam (Chen & He 2021): predictor + stop-gradient, no negatives."""

from __future__ import annotations

import torch.nn.functional as F

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp


def negative_cosine(p, z):
    """D(p, z) = -cos(p, stopgrad(z)), batch mean."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


@register("simsiam")
class SimSiam(SSLMethod):
    """Symmetric negative cosine between a predictor output and the stop-gradient projection.

    Multi-process rule: SyncBN in the encoder, projector and predictor (the paper's setting), so
    every batch statistic is over the global batch. Nothing is gathered: the loss is a mean of
    per-sample terms, each rank averages over its shard and DDP's gradient average gives the
    global mean (no 1/world_size anywhere).
    """

    loss_kind = "negative cosine"

    def __init__(self, backbone, proj_dim: int, pred_hidden_dim: int, fix_pred_lr: bool = True):
        super().__init__(backbone)
        self.fix_pred_lr = fix_pred_lr
        self.projector_spec = {"dims": [backbone.dim, proj_dim, proj_dim, proj_dim], "last_bn": True, "last_bn_affine": False}
        self.projector = mlp(**self.projector_spec)
        self.predictor = mlp([proj_dim, pred_hidden_dim, proj_dim])

    @classmethod
    def from_config(cls, backbone, cfg, num_train: int, num_classes: int | None = None) -> SimSiam:
        m = cfg.methods.simsiam
        return cls(backbone, m.proj_dim, m.pred_hidden_dim, m.fix_pred_lr)

    def fixed_lr_parameters(self):
        # The paper (Sec. 4.1, and main_simsiam.py's --fix-pred-lr): a decaying predictor lr is worse;
        # the predictor adapts to the latest representation fastest at the base lr.
        return list(self.predictor.parameters()) if self.fix_pred_lr else []

    def ssl_loss(self, x1, x2, update_state=True) -> SSLOutput:
        h1, h2 = self.backbone(x1), self.backbone(x2)
        z1, z2 = self.projector(h1), self.projector(h2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return SSLOutput(loss, h1)

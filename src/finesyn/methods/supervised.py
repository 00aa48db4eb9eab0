"""Supervised reference: the same encoder, views, steps and optimiser, trained with the labels.

Not an SSL method. It is the grid's upper reference row, next to `random_init` (the lower one):
what this backbone can learn from these images in this budget when it is told the classes. If it
does not beat `random_init` either, the budget is too short for any training to help, and the SSL
rows say nothing about SSL.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp


@register("supervised")
class Supervised(SSLMethod):
    """Cross-entropy of a linear head on `views` views (each view is a labelled sample).

    The loop hands each step's labels to `set_targets` before `ssl_loss`. Multi-process rule: the
    default (SyncBN); the loss is a per-sample mean, so DDP's gradient average is the global mean.
    """

    loss_kind = "cross-entropy with the labels"
    uses_labels = True

    def __init__(self, backbone, num_classes: int, label_smoothing: float = 0.0, views: int = 2):
        super().__init__(backbone)
        if views not in (1, 2):
            raise ValueError(f"methods.supervised.views must be 1 or 2, got {views}")
        self.label_smoothing, self.views = label_smoothing, views
        self.projector_spec = {"dims": [backbone.dim, num_classes]}  # one Linear: `project` gives the logits
        self.projector = mlp(**self.projector_spec)
        self.targets: torch.Tensor | None = None

    @classmethod
    def from_config(cls, backbone, cfg, num_train: int, num_classes: int | None = None) -> Supervised:
        if not num_classes:
            raise ValueError("method 'supervised' needs the dataset's labels (num_classes)")
        sup = cfg.methods.supervised
        return cls(backbone, num_classes, sup.label_smoothing, sup.views)

    def set_targets(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def ssl_loss(self, x1, x2, update_state=True) -> SSLOutput:
        if self.targets is None or len(self.targets) != len(x1):
            raise RuntimeError("Supervised.ssl_loss: call set_targets with this batch's labels first")
        hs = [self.backbone(x) for x in (x1, x2)[: self.views]]
        ce = [F.cross_entropy(self.projector(h), self.targets, label_smoothing=self.label_smoothing) for h in hs]
        return SSLOutput(cast(torch.Tensor, sum(ce) / len(ce)), hs[0])  # sum() of tensors: a tensor

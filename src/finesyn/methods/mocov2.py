"""MoCo v2 (Chen et al. 2020): InfoNCE against a queue of momentum-encoder keys."""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """-log softmax of the positive logit q·k among [q·k, q·queue] / T; q, k, queue L2-normalised."""
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@register("mocov2")
class MoCoV2(SSLMethod):
    def __init__(self, backbone, proj_hidden_dim: int, proj_dim: int, queue_size: int, momentum: float, temperature: float):
        super().__init__(backbone)
        self.projector_spec = {"dims": [backbone.dim, proj_hidden_dim, proj_dim], "bn": False}
        self.projector = mlp(**self.projector_spec)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum, self.temperature = momentum, temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, backbone, cfg, num_train: int) -> "MoCoV2":
        m = cfg.methods.mocov2
        queue = m.queue_size
        if queue > num_train:
            warnings.warn(
                f"pretrain.methods.mocov2.queue_size={queue} exceeds the {num_train} training images: "
                f"capped to {num_train} so the queue never holds two keys of the same image",
                stacklevel=2,
            )
            queue = num_train
        return cls(backbone, m.proj_hidden_dim, m.proj_dim, queue, m.momentum, m.temperature)

    def project(self, h):
        return self.projector(h)

    def ssl_loss(self, x1, x2, update_state=True) -> SSLOutput:
        h1 = self.backbone(x1)
        q = F.normalize(self.projector(h1), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_projector(self.key_backbone(x2)), dim=1)
        loss = info_nce(q, k, self.queue.clone().detach(), self.temperature)
        if update_state:
            self._enqueue(k)
        return SSLOutput(loss, h1)

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        n = min(len(k), len(self.queue))
        idx = (self.queue_ptr + torch.arange(n, device=k.device)) % len(self.queue)
        self.queue[idx] = k[:n]
        self.queue_ptr.copy_((self.queue_ptr + n) % len(self.queue))

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        for online, key in ((self.backbone, self.key_backbone), (self.projector, self.key_projector)):
            for p_o, p_k in zip(online.parameters(), key.parameters()):
                p_k.mul_(self.momentum).add_(p_o.detach(), alpha=1 - self.momentum)
            for b_o, b_k in zip(online.buffers(), key.buffers()):
                b_k.copy_(b_o)

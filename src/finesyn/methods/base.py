"""The interface every SSL method implements, so the synthesized-pair module works with any of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from finesyn.distributed import SINGLE, DistContext, convert_sync_batchnorm
from finesyn.models.backbone import Backbone

METHODS: dict[str, type[SSLMethod]] = {}


def register(name: str):
    def deco(cls: type[SSLMethod]) -> type[SSLMethod]:
        if name in METHODS:
            raise ValueError(f"SSL method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


@dataclass
class SSLOutput:
    loss: torch.Tensor
    h1: torch.Tensor  # online pooled feature of x1, still in the graph (the module decodes it)


class SSLMethod(nn.Module):
    """An SSL objective L_C(x1, x2) over an encoder `backbone` (x -> h).

    `ssl_loss(x1, x2, update_state=False)` must be a pure function of its inputs and the current
    parameters, so that the module's L_Cp is exactly "the method's own loss on the generated pair".

    Multi-process training (`finesyn.distributed`): each rank calls `ssl_loss` on its shard of the
    global batch and returns the mean over its own samples; DDP averages the gradients over the
    ranks, so the step is that of the mean over the global batch. A method states in its docstring
    how it keeps that exact (which BatchNorm, what is gathered) and implements it in `distribute`.
    """

    name: str = ""
    dist: DistContext = SINGLE  # set by `distribute`; a single process until then
    uses_labels: bool = False  # True only for the supervised reference: the loop then calls set_targets
    loss_kind: str = ""  # what L_C is, named on the report's curves: losses of different methods are not on one scale
    views: int = 2  # views of each image that ssl_loss reads; the loop augments only these (x2 = x1 for 1)
    indices: torch.Tensor | None = None  # dataset index of each image of the batch (set_indices)
    # set by every method's __init__: the head saved with the encoder, and mlp()'s arguments to rebuild it
    projector: nn.Module
    projector_spec: dict[str, Any]

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    @classmethod
    def from_config(cls, backbone: Backbone, cfg, num_train: int, num_classes: int | None = None) -> SSLMethod:
        """Build from `pretrain` settings and the dataset's facts (SSL methods ignore num_classes)."""
        raise NotImplementedError

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the constant base lr, outside the schedule (SimSiam's fix_pred_lr)."""
        return []

    def set_indices(self, indices: torch.Tensor) -> None:
        """The batch's dataset indices (this rank's shard, batch order), from the loop before each
        `ssl_loss`: how a method tells one image from another across steps (MoCo's queue)."""
        self.indices = indices

    def ssl_loss(self, x1: torch.Tensor, x2: torch.Tensor, update_state: bool = True) -> SSLOutput:
        raise NotImplementedError

    def pair_forces(self, x1: torch.Tensor, x2: torch.Tensor) -> dict | None:
        """A contrastive method's pull towards the positive and push from the negatives on the pair
        (x1, x2) (MoCo's `info_nce_forces`); None for methods without negatives."""
        return None

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """Called after each optimiser step with training progress in [0, 1] (momentum updates)."""

    def distribute(self, ctx: DistContext) -> None:
        """Adopt this method's multi-process rule; called once, before the optimiser is built.

        Default: every BatchNorm (encoder, heads, momentum/target copies) becomes a SyncBatchNorm,
        so batch statistics are those of the global batch, as in one process.
        """
        self.dist = ctx
        if ctx.enabled:
            convert_sync_batchnorm(self, ctx.device)


def build_method(name: str, backbone: Backbone, cfg, num_train: int, num_classes: int | None = None) -> SSLMethod:
    if name not in METHODS:
        raise ValueError(f"unknown SSL method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name].from_config(backbone, cfg, num_train, num_classes)

"""Distributed pretraining under torchrun: process group, sharding, per-rank seeds, collectives.

    torchrun --nproc_per_node N stages/pretrain.py ...

`init_from_env` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK and starts the process group
(nccl on CUDA, gloo on CPU). The trainer wraps L_C (+ α·L_R + ν·L_Cp) in one
DistributedDataParallel module, which averages the gradients over the ranks exactly once; no
loss is ever scaled by 1/world_size. Every rank draws the same data order (same generator) and
takes a disjoint, contiguous shard of each global batch of `pretrain.batch_size` images
(rank r gets rows r·b .. r·b+b-1, b = batch_size / world_size).

Per-method rules (each method's docstring states its own): BatchNorm is synchronised over the
global batch (SyncBN; `SyncBatchNorm` below also runs on CPU/gloo); MoCo gathers its keys and
enqueues them on every rank in rank order; SimCLR gathers its negatives with gradient; the
synthesized-pair module reduces its statistics and Grad-CAM importances over the ranks and draws
its randomness for the global batch from a generator shared by all ranks.

Single-process equivalence (what tests/test_distributed.py proves)
-------------------------------------------------------------------
A run on W processes equals a single-process run on the same global batches -- same initial
weights, same data order -- *given the same augmented views*: every loss value, gradient, BN
statistic, MoCo queue, module mask and perturbation is then a function of the global batch
alone, so losses and parameter updates agree up to float reduction order. Only the
augmentation stream differs by design: rank r augments its shard with its own generator
(`aug_seed`), a single process augments the whole batch with one generator. The test therefore
replaces augmentation with views that depend only on (sample index, step) (`pretrain(views=...)`).
Not covered by the equivalence: `synth.pair_fraction < 1` (each rank pairs the first
⌈f·N/W⌉ samples of its own shard, not the first ⌈f·N⌉ of the global batch) and MoCo with
`shuffle_bn=True` (per-rank BN: the objective depends on W, as in the official MoCo).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from finesyn.config import ParamsError
from finesyn.device import DeviceUnavailableError, select_device


# ----------------------------------------------------------------------------- autograd collectives
class _AllGather(torch.autograd.Function):
    """cat(all_gather(x)) in rank order; backward: each rank's slice of the summed gradients.

    Rank s's x feeds the gathered tensor of every rank r, so d(Σ_r L_r)/dx_s = Σ_r g_r[s]: an
    all_reduce of the incoming gradient, then this rank's rows (as lightly's GatherLayer; gloo
    has no reduce_scatter).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), len(x)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


# ----------------------------------------------------------------------------- the context
@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run. The default is a single process (every op an identity)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # tensors -----------------------------------------------------------------
    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks, no gradient (a new tensor; `t` is untouched)."""
        if not self.enabled:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """The ranks' tensors concatenated along dim 0 in rank order, no gradient (equal shapes)."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.detach().contiguous())
        return torch.cat(parts)

    def all_gather_with_grad(self, t: torch.Tensor) -> torch.Tensor:
        """As `all_gather`, differentiable: the gradient of every rank's loss flows back to its source."""
        return _AllGather.apply(t) if self.enabled else t

    def local_rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor laid out as the global batch (W equal blocks in rank order)."""
        n = len(t) // self.world_size
        return t[self.rank * n : (self.rank + 1) * n]

    # python objects ----------------------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (e.g. a SIGTERM seen by one rank first)."""
        if not self.enabled:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def all_gather_object(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if not self.enabled:
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()


SINGLE = DistContext()


def init_from_env(device_choice: str = "auto") -> DistContext:
    """Start the process group described by torchrun's environment; a single process without it.

    nccl when the device is CUDA (rank r uses cuda:LOCAL_RANK), gloo on CPU. MPS has no
    multi-process backend.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = select_device(device_choice)
    if world <= 1:
        return DistContext(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} CUDA devices (lower --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "mps":
        raise DeviceUnavailableError("distributed pretraining is not supported on MPS (set pretrain.device: cpu, or run one process)")
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistContext(rank, world, local_rank, device)


def current(device_choice: str = "auto") -> DistContext:
    """The context of an already initialised process group (e.g. started by a caller), else a single process."""
    device = select_device(device_choice)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistContext(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def data_parallel(module: nn.Module, ctx: DistContext) -> nn.Module:
    """`module` wrapped in DistributedDataParallel when there are several ranks (else unchanged).

    DDP all-reduces and averages the gradients exactly once; no loss is scaled by 1/world_size.
    Buffers are not re-broadcast each forward: SyncBN statistics, the MoCo queue and the module's
    statistics are identical on every rank by construction (the test checks it bitwise), and a
    65536-key queue would otherwise be sent every step.
    """
    if not ctx.enabled:
        return module
    params = inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync: dict[str, Any] = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- batches and seeds
def local_batch_size(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ParamsError(
            f"pretrain.batch_size ({global_batch}) is the global batch and must be divisible by the number of "
            f"processes ({world_size}); each rank takes batch_size / {world_size} images"
        )
    return global_batch // world_size


def aug_seed(seed: int, ctx: DistContext, salt: int = 0) -> int:
    """Seed of this rank's augmentation generator.

    One process: seed + 1 (unchanged from the single-process trainer). Several: derived from
    (seed, rank, salt) by numpy's SeedSequence. A plain seed + rank would make rank 1's stream
    the data order's (seed + 2).
    """
    if not ctx.enabled and salt == 0:
        return seed + 1
    return int(np.random.SeedSequence([seed, 7919, ctx.rank, salt]).generate_state(1)[0])


def synth_seed(seed: int, salt: int = 0) -> int:
    """Seed of the module's generator (its 'random' dims, perturbation noise, swap shift): one stream of
    its own in every process layout, shared by all ranks. Never the augmentation's: a baseline and its
    +module run of one seed then draw byte-identical views and data order at every step (paired runs)."""
    return int(np.random.SeedSequence([seed, 4241, salt]).generate_state(1)[0])


# ----------------------------------------------------------------------------- SyncBN on any device
class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are over the global batch of all ranks, on CPU/gloo.

    torch's nn.SyncBatchNorm is CUDA-only (its forward rejects CPU input and DDP refuses it in a
    CPU module), so `convert_sync_batchnorm` uses it on CUDA and this class elsewhere. The same
    statistics, with ordinary differentiable ops: every rank gathers (mean, M2, count) of all ranks
    (one all_gather; gradient through `_AllGather`) and merges them with Chan's parallel formula --
    numerically stable, and the same numbers on every rank, hence bit-identical running statistics
    across ranks. Outside training, or without a process group, it is a plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)  # a plain BatchNorm
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.numel() // c
        var_l, mean_l = torch.var_mean(x, dim=dims, correction=0)
        local = torch.cat([mean_l, var_l * count, torch.full((1,), float(count), dtype=x.dtype, device=x.device)])
        stats = _AllGather.apply(local.unsqueeze(0))  # (W, 2C+1), rank order
        means, m2s, counts = stats[:, :c], stats[:, c : 2 * c], stats[:, 2 * c :]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (m2s.sum(0) + (counts * (means - mean) ** 2).sum(0)) / n  # biased, as BN normalises
        if self.track_running_stats and self.running_mean is not None:
            factor = 0.0 if self.momentum is None else self.momentum  # as _BatchNorm.forward
            assert self.num_batches_tracked is not None and self.running_var is not None  # registered with running_mean
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=factor)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Replace every BatchNorm in `module` (in place) by a synchronised one: torch's
    nn.SyncBatchNorm on CUDA, `SyncBatchNorm` elsewhere. Parameter and buffer objects are kept, so
    state_dict keys and checkpoints are the same as without conversion."""
    if device is not None and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, (SyncBatchNorm, nn.SyncBatchNorm)):
            new = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child)
    return module


__all__ = [
    "DistContext",
    "SINGLE",
    "init_from_env",
    "current",
    "data_parallel",
    "shutdown",
    "local_batch_size",
    "aug_seed",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
]

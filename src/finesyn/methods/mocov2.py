"""MoCo v2 (Chen et al. 2020): InfoNCE against a queue of momentum-encoder keys."""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp

log = logging.getLogger(__name__)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """-log softmax of the positive logit q·k among [q·k, q·queue] / T; q, k, queue L2-normalised.

    `exclude` (n, K) bool: negatives left out of query i's softmax (their logit is -inf).
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    if exclude is not None:
        neg = neg.masked_fill(exclude, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@torch.no_grad()
def info_nce_forces(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None) -> dict:
    """What InfoNCE does to each query, split in two: ∂L/∂q = (−(1 − p⁺)·k + Σ_j p_j·n_j) / T, the pull
    towards its positive and the push away from the negatives, each projected on the sphere's tangent
    at q (the part that moves a unit query) and averaged over the queries; with the positive's cos and
    the nearest negative's. A pair the encoder already maps together has a small pull."""
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    if exclude is not None:
        neg = neg.masked_fill(exclude, float("-inf"))
    p = torch.softmax(torch.cat([pos, neg], dim=1) / temperature, dim=1)
    pull = -(1 - p[:, :1]) * k / temperature
    push = (p[:, 1:] @ queue) / temperature

    def tangent_norm(v: torch.Tensor) -> float:
        return float((v - (v * q).sum(1, keepdim=True) * q).norm(dim=1).mean())

    return {
        "pull": tangent_norm(pull),
        "push": tangent_norm(push),
        "pos_cos": float(pos.mean()),
        "max_neg_cos": float(neg.max(1).values.mean()),
    }


@register("mocov2")
class MoCoV2(SSLMethod):
    """Queries from the online encoder, keys from its EMA copy, negatives from a FIFO queue of keys.

    A step's keys join the queue when the step ends (`after_step`), so every loss of the step --
    L_C and the module's L_Cp on images decoded from the same batch -- meets the same negatives,
    none of them a key of this step. Each key is stored with its image's dataset index
    (`set_indices`), and a query's own image is masked out of its negatives: on a small
    fine-grained dataset the queue holds stale keys of the queried images themselves (moco issue
    87), which a cap at the dataset size does not prevent, so the queue is never capped.

    Multi-process rule: the keys of all ranks and their indices are gathered (no gradient) and
    enqueued on every rank in rank order, so every rank holds the same queue (bitwise) and it is the queue a single
    process would hold after the same global batches. Each rank's InfoNCE is the mean over its own
    queries against that queue; DDP's gradient average makes the step that of the global mean.

    BatchNorm (`shuffle_bn`, from `pretrain.methods.mocov2.shuffle_bn`):
    - False (default): SyncBN for the query and the key encoder. Statistics are over the global
      batch, as in one process, so a W-process run *is* the single-process run (what the
      distributed test proves), and CPU runs reproduce GPU runs.
    - True: the official MoCo's shuffling BN. No SyncBN; each rank's key encoder normalises a
      random shard of the global batch (permutation broadcast from rank 0) and the keys are
      un-shuffled, so a query and its key never share BN statistics; queries use per-rank BN, and
      BN running statistics are per rank (the checkpoint keeps rank 0's). The objective then
      depends on the number of processes; with one process there is nothing to shuffle.
    """

    loss_kind = "InfoNCE"
    queue: torch.Tensor  # buffers (register_buffer in __init__)
    queue_idx: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(
        self, backbone, proj_hidden_dim: int, proj_dim: int, queue_size: int, momentum: float, temperature: float, shuffle_bn: bool = False
    ):
        super().__init__(backbone)
        self.shuffle_bn = shuffle_bn
        self.projector_spec = {"dims": [backbone.dim, proj_hidden_dim, proj_dim], "bn": False}
        self.projector = mlp(**self.projector_spec)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum, self.temperature = momentum, temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_idx", torch.full((queue_size,), -1, dtype=torch.long))  # key's image; -1: none
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's (keys, indices), global batch

    @classmethod
    def from_config(cls, backbone, cfg, num_train: int, num_classes: int | None = None) -> MoCoV2:
        m = cfg.methods.mocov2
        keys = cfg.total_steps(num_train) * cfg.batch_size  # the global batch's keys, every step
        if m.queue_size > keys:  # MoCo's queue is meant to fill early; a user of a small dataset should know it does not
            log.info(
                "mocov2 queue: %d rows, this run enqueues %d keys: %.0f %% of the rows stay the random unit vectors "
                "they start as, negatives of every query for the whole run. Expected on a small dataset with the paper's "
                "queue size; on the default a queue that fills (4096) measured no better (docs/findings.md, 'A MoCo "
                "queue at the scale of the data'). To fill it, set pretrain.methods.mocov2.queue_size <= %d",
                m.queue_size, keys, 100 * (m.queue_size - keys) / m.queue_size, keys,
            )  # fmt: skip
        return cls(backbone, m.proj_hidden_dim, m.proj_dim, m.queue_size, m.momentum, m.temperature, shuffle_bn=m.shuffle_bn)

    def distribute(self, ctx) -> None:
        if self.shuffle_bn:
            self.dist = ctx  # per-rank BN: the shuffle is what keeps queries and keys apart
        else:
            super().distribute(ctx)

    def ssl_loss(self, x1, x2, update_state=True) -> SSLOutput:
        h1 = self.backbone(x1)
        q = F.normalize(self.projector(h1), dim=1)
        with torch.no_grad():
            if self.shuffle_bn and self.dist.enabled:
                k_all = self._shuffled_keys(x2)
                k = self.dist.local_rows(k_all)
            else:
                k, k_all = self._keys(x2), None
        own = self._own_indices(len(x1))
        exclude = None if own is None else own[:, None] == self.queue_idx[None, :]
        loss = info_nce(q, k, self.queue, self.temperature, exclude)  # the queue changes only after the backward
        if update_state:
            k_all = k_all if k_all is not None else self.dist.all_gather(k)  # global batch, rank order
            own = torch.full((len(k),), -1, dtype=torch.long, device=k.device) if own is None else own
            self._pending = (k_all, self.dist.all_gather(own))
        return SSLOutput(loss, h1)

    def in_batch_loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """InfoNCE of x1's queries against x2's keys, the negatives being the other keys of the (global)
        batch, not the queue: L_Cp with synth.pair_negatives: generated, whose negatives are decoded images
        too (against the real-image queue L_Cp mostly pushes decoded images away from real ones)."""
        q = F.normalize(self.projector(self.backbone(x1)), dim=1)
        with torch.no_grad():
            k = self._keys(x2)
            k_all = self.dist.all_gather(k)
        own = torch.arange(len(k), device=k.device) + self.dist.rank * len(k)
        return info_nce(q, k, k_all, self.temperature, own[:, None] == torch.arange(len(k_all), device=k.device)[None, :])

    @torch.no_grad()
    def pair_forces(self, x1: torch.Tensor, x2: torch.Tensor) -> dict:
        """`info_nce_forces` of the queries of x1 against the keys of x2 and the queue (the module's health)."""
        q = F.normalize(self.projector(self.backbone(x1)), dim=1)
        own = self._own_indices(len(x1))
        exclude = None if own is None else own[:, None] == self.queue_idx[None, :]
        return info_nce_forces(q, self._keys(x2), self.queue, self.temperature, exclude)

    def _own_indices(self, n: int) -> torch.Tensor | None:
        """Dataset indices of the n queries; a batch shorter than the indexed one is its first n
        images (the module's pairs, decoded from them). None without indices: nothing is masked."""
        if self.indices is None:
            return None
        if n > len(self.indices):
            raise ValueError(f"MoCoV2.ssl_loss: {n} images but {len(self.indices)} indices (set_indices with this batch's first)")
        return self.indices[:n].to(self.queue_idx.device)

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)

    @torch.no_grad()
    def _shuffled_keys(self, x2: torch.Tensor) -> torch.Tensor:
        """Keys of the whole global batch (rank order), each computed on a rank holding a random shard."""
        d = self.dist
        x_all = d.all_gather(x2)
        perm = torch.randperm(len(x_all)).to(x2.device)  # torch's global RNG, saved in checkpoints
        torch.distributed.broadcast(perm, src=0)
        k_shuffled = d.all_gather(self._keys(d.local_rows(x_all[perm])))
        k_all = torch.empty_like(k_shuffled)
        k_all[perm] = k_shuffled
        return k_all

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor, image_idx: torch.Tensor | None = None) -> None:
        n = min(len(k), len(self.queue))
        idx = (self.queue_ptr + torch.arange(n, device=k.device)) % len(self.queue)
        self.queue[idx] = k[:n]
        self.queue_idx[idx] = -1 if image_idx is None else image_idx[:n]
        self.queue_ptr.copy_((self.queue_ptr + n) % len(self.queue))

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        if self._pending is not None:
            self._enqueue(*self._pending)
            self._pending = None
        for online, key in ((self.backbone, self.key_backbone), (self.projector, self.key_projector)):
            for p_o, p_k in zip(online.parameters(), key.parameters()):
                p_k.mul_(self.momentum).add_(p_o.detach(), alpha=1 - self.momentum)
            for b_o, b_k in zip(online.buffers(), key.buffers()):
                b_k.copy_(b_o)

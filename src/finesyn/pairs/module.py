"""SynthPairs: decode h and a copy perturbed along non-discriminative dimensions, train on the pair.

Works with any `SSLMethod`: it needs only `out.h1` (the online pooled feature of the first
view, still in the graph) and `method.ssl_loss` (reused as L_Cp on the generated pair).

Multi-process rule (after `distribute(ctx)`): every rank must perturb the same dimensions, and
the run must equal one process on the global batch.
- Variance statistics: Σh, Σh² and the count are all-reduced (SUM), so mean/var (and their EMA)
  are the global batch's, identical on every rank.
- Grad-CAM: each rank's ∂L_C/∂h is that of Σ_r L_r (the collectives inside L_C -- SyncBN,
  SimCLR's gather -- carry the other ranks' dependence back), i.e. world_size × the gradient of the
  global mean loss; Σ_i(-∂L/∂h_i) and Σ_i h_i are all-reduced, so the importance is the global
  one, not an average of per-rank products.
- Randomness (the 'random' criterion, the perturbation noise, swap's shift) comes from `g`,
  which the trainer makes a generator shared by all ranks; the perturbation is drawn for the
  all-gathered pair batch (with gradient if h is not detached) and each rank keeps its rows.
- The decoder's BatchNorm is SyncBN; L_R and L_Cp are per-rank means (DDP averages gradients).
- L_Cp's forward normalises with batch statistics (train mode, synchronised where L_C's are) but
  updates no BatchNorm running statistics of the method (`running_stats_kept`), on any rank.
Exact for pair_fraction = 1; with f < 1 each rank pairs the first ⌈f·N/W⌉ of its shard.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from finesyn.data.augment import reaugment
from finesyn.distributed import SINGLE, DistContext, convert_sync_batchnorm
from finesyn.methods.base import SSLMethod, SSLOutput
from finesyn.models.decoder import Decoder
from finesyn.pairs import criteria
from finesyn.pairs.perturb import perturb

if TYPE_CHECKING:
    from finesyn.methods.mocov2 import MoCoV2


@contextmanager
def running_stats_kept(module: nn.Module):
    """Within the block, `module`'s BatchNorm layers normalise with batch statistics (train mode)
    but leave their running statistics (and num_batches_tracked) untouched.

    Decoded images are not real images, and evaluation normalises real images with the running
    statistics: L_Cp's forward must not move them. track_running_stats=False is what every BN
    (torch's, its SyncBatchNorm, ours) reads to skip the update; unlike momentum 0 it is exact for
    any batch and leaves no buffer in L_Cp's graph that a restore would have to overwrite.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


@dataclass
class SynthLosses:
    recon: torch.Tensor  # L_R
    pair: torch.Tensor  # L_Cp
    n_selected: int  # dimensions perturbed this step
    mask: torch.Tensor  # (d,) bool
    images: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # (x1, g(h), g(h̃)) of the pair samples, detached; None without pairs


class SynthPairs(nn.Module):
    dist: DistContext = SINGLE  # set by `distribute`
    running_mean: torch.Tensor  # buffers (register_buffer in __init__)
    running_var: torch.Tensor
    stats_initialised: torch.Tensor

    def __init__(self, feature_dim: int, image_size: int, cfg, augment=None):
        """`cfg` is a SynthConfig; `augment` the run's AugmentConfig (used with cfg.pair_augment)."""
        super().__init__()
        self.cfg, self.augment = cfg, augment
        self.decoder = Decoder(feature_dim, image_size, cfg.decoder, cfg.decoder_width)
        self.register_buffer("running_mean", torch.zeros(feature_dim))
        self.register_buffer("running_var", torch.ones(feature_dim))
        self.register_buffer("stats_initialised", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, feature_dim: int, image_size: int, cfg, augment=None) -> SynthPairs:
        if cfg.pair_augment and augment is None:
            raise ValueError("synth.pair_augment needs the run's augmentation settings (augment=)")
        return cls(feature_dim, image_size, cfg, augment)

    def distribute(self, ctx: DistContext) -> None:
        """Adopt the multi-process rule (module docstring); called once, before the optimiser is built."""
        self.dist = ctx
        if ctx.enabled:
            convert_sync_batchnorm(self.decoder, ctx.device)

    # -- statistics -----------------------------------------------------------------
    @torch.no_grad()
    def _stats(self, h: torch.Tensor, reduce=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and variance of h: this batch's, or an EMA over batches.

        `reduce(sum_tensor)` all-reduces across ranks under DDP, so every rank selects the same dims.
        """
        s = torch.stack([h.sum(0), (h * h).sum(0), torch.full_like(h[0], len(h))])
        if reduce is not None:
            s = reduce(s)
        n = s[2]
        mean = s[0] / n
        var = (s[1] / n - mean**2).clamp_min(0) * n / (n - 1).clamp_min(1)
        if self.cfg.variance_stat == "batch":
            return mean, var
        if not bool(self.stats_initialised):
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.stats_initialised.fill_(True)
        else:
            m = self.cfg.ema_momentum
            self.running_mean.mul_(m).add_(mean, alpha=1 - m)
            self.running_var.mul_(m).add_(var, alpha=1 - m)
        return self.running_mean.clone(), self.running_var.clone()

    def select(self, h: torch.Tensor, loss_c: torch.Tensor, var: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Boolean mask of the dimensions to perturb (criteria combined by union or intersection)."""
        cfg, hd = self.cfg, h.detach()
        masks = []
        for name in cfg.criteria:
            if name == "variance":
                masks.append(criteria.lowest(var, cfg.k_var))
            elif name == "gradcam":
                # Only the projection head lies between h and L_C: this backward never enters the backbone.
                (grad,) = torch.autograd.grad(loss_c, h, retain_graph=True)
                masks.append(criteria.lowest(criteria.gradcam_scores(self._importance(hd, grad), cfg.gradcam_rank), cfg.k_cam))
            elif name == "random":
                masks.append(criteria.random_mask(hd.shape[1], cfg.k_random, g, hd.device))
        return criteria.combine(masks, cfg.combine)

    def _importance(self, h: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
        """Grad-CAM importance of the global batch (criteria.gradcam_importance in one process)."""
        d = self.dist
        if not d.enabled:
            return criteria.gradcam_importance(h, grad_h)
        # grad_h is ∂(Σ_r L_r)/∂h = world_size · ∂L/∂h for the global mean loss L
        dt = torch.promote_types(h.dtype, torch.float32)  # AMP's half types are summed in float32
        h, grad_h = h.to(dt), grad_h.to(dt)
        s = d.all_reduce_sum(torch.stack([(-grad_h * h).sum(0) / d.world_size, torch.full_like(h[0], len(h))]))
        return s[0] / s[1]

    def _perturb(self, h_src: torch.Tensor, mask, mean, std, g: torch.Generator) -> torch.Tensor:
        """perturb() drawn for the global pair batch (all ranks' h_src, rank order); this rank's rows."""
        cfg, d = self.cfg, self.dist
        if not d.enabled:
            return perturb(h_src, mask, cfg.perturbation, cfg.beta, mean, std, g)
        h_all = d.all_gather_with_grad(h_src) if h_src.requires_grad else d.all_gather(h_src)
        return d.local_rows(perturb(h_all, mask, cfg.perturbation, cfg.beta, mean, std, g))

    def _decode_pair(self, x_hat, h_src, h_tilde, whole_batch: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(g(h), g(h̃)) of the pair rows, with a graph only where a gradient needs one."""
        cfg = self.cfg
        if cfg.detach_h and not cfg.decoder_grad_from_pairs:
            # Nothing upstream of the pair needs a gradient: decode without a graph. g(h) from L_R is
            # reused only for the whole batch: train-mode BN makes g(h)[:n] differ from g(h[:n]).
            with torch.no_grad():
                return (x_hat.detach() if whole_batch else self.decoder(h_src)), self.decoder(h_tilde)
        if cfg.decoder_grad_from_pairs:
            return self.decoder(h_src), self.decoder(h_tilde)
        self.decoder.requires_grad_(False)  # gradient reaches h through a decoder that does not learn from L_Cp
        try:
            return self.decoder(h_src), self.decoder(h_tilde)
        finally:
            self.decoder.requires_grad_(True)

    # -- the module ------------------------------------------------------------------
    def forward(self, method: SSLMethod, out: SSLOutput, x1: torch.Tensor, g: torch.Generator, pairs: bool = True) -> SynthLosses:
        """`g` must be in the same state on every rank under DDP (the trainer's shared generator).

        `pairs=False` (ν = 0, the α-only runs of Fig. 5): L_R only. No pair is selected, decoded or
        passed through the encoder, so decoded images never reach its BatchNorm statistics.
        """
        cfg, h = self.cfg, out.h1
        x_hat = self.decoder(h if cfg.recon_grad_to_encoder else h.detach())
        loss_r = F.mse_loss(x_hat, x1)
        if not pairs:
            none = torch.zeros(h.shape[1], dtype=torch.bool, device=h.device)
            return SynthLosses(loss_r, loss_r.new_zeros(()), 0, none, None)

        stat_dt = torch.promote_types(h.dtype, torch.float32)  # AMP's half types: float32; float64 stays exact
        mean, var = self._stats(h.detach().to(stat_dt), self.dist.all_reduce_sum if self.dist.enabled else None)
        mask = self.select(h, out.loss, var, g)
        n = max(2, math.ceil(cfg.pair_fraction * len(h)))
        h_src = h.detach()[:n] if cfg.detach_h else h[:n]
        h_tilde = self._perturb(h_src, mask, mean.to(h.dtype), var.sqrt().to(h.dtype), g)

        with running_stats_kept(self.decoder):  # g's running statistics are those of L_R's real-image h (eval: PSNR, figures)
            x_a, x_b = self._decode_pair(x_hat, h_src, h_tilde, n == len(h))
        v_a, v_b = (reaugment(x_a, self.augment, g), reaugment(x_b, self.augment, g)) if cfg.pair_augment else (x_a, x_b)
        with running_stats_kept(method):  # the key encoder's too: its buffers are copied from the online ones anyway
            if cfg.pair_negatives == "generated":
                loss_cp = cast("MoCoV2", method).in_batch_loss(v_a, v_b)  # params validation: mocov2 only
            else:
                loss_cp = method.ssl_loss(v_a, v_b, update_state=False).loss
        return SynthLosses(loss_r, loss_cp, int(mask.sum()), mask, (x1[:n].detach(), x_a.detach(), x_b.detach()))

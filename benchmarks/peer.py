"""Our MoCo v2 step against the same MoCo v2 built from lightly (issue 9, item 2).

Same backbone (finesyn's Backbone), batch, resolution, queue size, temperature, key-encoder
momentum, projection head (2-layer MLP, no BN) and optimiser (pretrain.optimizer). Both
get the same pre-augmented views in the same order, so only the model + loss + optimiser step is
compared: ours is `finesyn.train.pretrain` with `RunSpec.views` replacing the augmentation; the
peer's step runs inside our trainer's progress callback, after each of our steps, so the two
alternate step by step and see the same machine load. The FLOPs of one step of each are
counted too: equal counts show the two compute the same thing.

lightly is never a project dependency: `make bench` installs it into `.bench-deps/`
(`pip install --no-deps --target .bench-deps lightly==1.6.0`), which is put on sys.path here
only; without it the benchmark is skipped with the reason recorded.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

from benchmarks.common import Context, Setting, default_setting, paper_setting, stats, target, timed_pretrain

PEER_TARGET = 1.05  # our step <= 1.05x lightly's (issue 9)
LIGHTLY_VERSION = "1.6.0"


def load_lightly(deps_dir: Path):
    """(namespace with NTXentLoss, MoCoProjectionHead, update_momentum, version, file) or (None, reason)."""
    deps_dir = Path(deps_dir)
    if not deps_dir.is_dir():
        return None, (
            f"{deps_dir} does not exist: `make bench` installs the peer there "
            f"(pip install --no-deps --target .bench-deps lightly=={LIGHTLY_VERSION})"
        )
    if str(deps_dir) not in sys.path:
        sys.path.insert(0, str(deps_dir))
    try:
        import lightly
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import update_momentum
    except Exception as e:  # noqa: BLE001 - any import failure skips the peer, with its reason
        return None, f"cannot import lightly from {deps_dir}: {type(e).__name__}: {e}"

    class L:
        pass

    L.NTXentLoss, L.MoCoProjectionHead, L.update_momentum = NTXentLoss, MoCoProjectionHead, update_momentum
    L.version, L.file = getattr(lightly, "__version__", "?"), str(Path(lightly.__file__).parent)
    return L, None


class LightlyMoCoV2:
    """MoCo v2 as lightly's examples build it: backbone + MoCoProjectionHead, EMA copies updated
    with update_momentum, NTXentLoss with a memory bank of keys."""

    def __init__(self, L, setting: Setting, queue: int):
        import torch

        from finesyn.models.backbone import Backbone
        from finesyn.train import make_optimizer

        cfg, m = setting.cfg, setting.cfg.methods.mocov2
        torch.manual_seed(1)
        # the same encoder (lightly takes any backbone; resnet_small is not a torchvision model)
        self.backbone = Backbone(cfg.backbone, cfg.stem, cfg.pool)
        self.head = L.MoCoProjectionHead(self.backbone.dim, m.proj_hidden_dim, m.proj_dim)
        self.backbone_m = copy.deepcopy(self.backbone).requires_grad_(False)
        self.head_m = copy.deepcopy(self.head).requires_grad_(False)
        self.criterion = L.NTXentLoss(temperature=m.temperature, memory_bank_size=(queue, m.proj_dim))
        self.update_momentum, self.momentum = L.update_momentum, m.momentum
        self.channels_last = cfg.channels_last  # the same memory layout as our trainer uses
        for mod in (self.backbone, self.head, self.backbone_m, self.head_m, self.criterion):
            mod.train()
            if self.channels_last:
                mod.to(memory_format=torch.channels_last)
        self.opt = make_optimizer(cfg, list(self.backbone.parameters()) + list(self.head.parameters()))  # pretrain.optimizer, as ours

    def step(self, v1, v2) -> float:
        import torch

        if self.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        self.update_momentum(self.backbone, self.backbone_m, self.momentum)
        self.update_momentum(self.head, self.head_m, self.momentum)
        q = self.head(self.backbone(v1))
        with torch.no_grad():
            k = self.head_m(self.backbone_m(v2))
        loss = self.criterion(q, k)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def _views(setting: Setting, k: int):
    """k pre-augmented (v1, v2) pairs of random images, made once with our augmentation."""
    import numpy as np
    import torch

    from finesyn.data.augment import ssl_view

    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(k):
        batch = torch.from_numpy(rng.integers(0, 256, (setting.cfg.batch_size, setting.image_size, setting.image_size, 3), dtype=np.uint8))
        pairs.append(
            (
                ssl_view(batch, setting.cfg.augment, setting.crop, g).contiguous(),
                ssl_view(batch, setting.cfg.augment, setting.crop, g).contiguous(),
            )
        )
    return pairs


def compare(ctx: Context, L, setting: Setting) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    m = setting.cfg.methods.mocov2
    queue = m.queue_size  # our trainer keeps the whole queue (own images masked), so does the peer
    pairs = _views(setting, 2 if ctx.quick else 4)
    peer = LightlyMoCoV2(L, setting, queue)
    losses = []

    def peer_step(step: int) -> float:  # step: our trainer's 1-based step that just ended
        v1, v2 = pairs[(step - 1) % len(pairs)]
        t0 = time.perf_counter()
        losses.append(peer.step(v1, v2))
        return time.perf_counter() - t0

    rec = timed_pretrain(
        setting,
        "mocov2",
        False,
        ctx.plan(setting.name),
        count_flops=True,
        views=lambda batch, idx, step: pairs[step % len(pairs)],
        between=peer_step,
    )
    with FlopCounterMode(display=False) as fc:
        peer_step(1)
    peer_flops = int(fc.get_total_flops())
    ours, theirs = stats(rec.measured), stats(rec.extra_measured)
    ratio = ours["median"] / theirs["median"] if ours["median"] and theirs["median"] else None
    bs = setting.cfg.batch_size
    ctx.log(f"  peer {setting.name}: ours {ours['median']:.3f} s, lightly {theirs['median']:.3f} s per step (ratio {ratio:.3f})")
    return {
        "setting": setting.name,
        "backbone": setting.cfg.backbone,
        "crop_size": setting.crop,
        "batch_size": bs,
        "queue_size": queue,
        "temperature": m.temperature,
        "key_momentum": m.momentum,
        "proj_hidden_dim": m.proj_hidden_dim,
        "proj_dim": m.proj_dim,
        "ours": {
            "step_s": ours,
            "images_per_s": bs / ours["median"] if ours["median"] else None,
            "flops_per_step": rec.flops,
            "achieved_gflops": rec.flops / ours["median"] / 1e9 if rec.flops and ours["median"] else None,
        },
        "peer": {
            "step_s": theirs,
            "images_per_s": bs / theirs["median"] if theirs["median"] else None,
            "flops_per_step": peer_flops,
            "achieved_gflops": peer_flops / theirs["median"] / 1e9 if theirs["median"] else None,
            "last_loss": losses[-1] if losses else None,
        },
        "flops_match": bool(rec.flops) and abs(rec.flops - peer_flops) <= 0.01 * peer_flops,
        "ratio_ours_over_peer": ratio,
    }


def run(ctx: Context) -> dict:
    L, reason = load_lightly(ctx.deps_dir)
    if L is None:
        return {
            "status": "skipped",
            "reason": reason,
            "targets": [
                target(f"peer.{s}.mocov2", f"our MoCo v2 step / lightly's ({s} setting)", None, PEER_TARGET, "<=", "x", setting=s)
                for s in ("default", "paper")
            ],
        }
    comparisons, targets = [], []
    for setting in (default_setting(ctx.quick), paper_setting(ctx.quick)):
        c = compare(ctx, L, setting)
        comparisons.append(c)
        targets.append(
            target(
                f"peer.{setting.name}.mocov2",
                f"our MoCo v2 step / lightly's ({setting.name} setting)",
                c["ratio_ours_over_peer"],
                PEER_TARGET,
                "<=",
                "x",
                setting=setting.name,
            )
        )
    ctx.shared["peer"] = comparisons
    return {
        "lightly_version": L.version,
        "lightly_path": L.file,
        "inputs": "pre-augmented views, identical for both, alternating step by step",
        "comparisons": comparisons,
        "targets": targets,
    }

"""Learning parity with the peer (issue 16, item 5): our training loop against a minimal MoCo v2 loop
built from lightly's pieces, trained on the same data, views, optimiser, schedule and steps.

The step comparison (benchmarks/peer.py) shows that one step computes the same thing; this shows
that whole runs end in the same place, i.e. that our loop (data order, views, schedule, queue,
momentum update, BN handling) is right, not only our loss. Both train on the default's data
(params.yaml, the train split) for `pretrain.epochs`; both are scored by the pipeline's extractor,
L-BFGS linear probe and kNN-20 on the test split, over several seeds.

Deliberate, documented differences: lightly's example updates the key encoder before the
forward, ours after the step (a one-step shift of the same EMA); lightly's memory bank does not
mask a query's own image. The queue is therefore set below one epoch of keys for both
(`PARITY_QUEUE`), so that the bank of either loop rarely holds a stale key of a queried image.

Target: the seed-mean top-1 of the two loops differ by at most two binomial standard errors of one
evaluation on the test set (sqrt(p(1-p)/n_test)), for the linear probe and for kNN-20.
"""

from __future__ import annotations

import copy
import statistics
import time

import numpy as np

from benchmarks.common import Context, default_dataset, default_pretrain_config, probe_scores, target
from benchmarks.peer import load_lightly

PARITY_QUEUE = 1024  # < one epoch of keys (28 steps x 64) on the default
SEEDS = (0, 1, 2)


def lightly_pretrain(L, images: np.ndarray, train_idx: np.ndarray, cfg, crop: int, seed: int):
    """A minimal MoCo v2 loop as lightly's examples write it; our Backbone, views, optimiser and schedule."""
    import torch

    from finesyn.data.augment import ssl_view
    from finesyn.models.backbone import Backbone
    from finesyn.train import lr_at, make_optimizer

    m = cfg.methods.mocov2
    torch.manual_seed(seed)
    backbone = Backbone(cfg.backbone, cfg.stem, cfg.pool)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format  # ours: pretrain.channels_last
    backbone = backbone.to(memory_format=layout)
    head = L.MoCoProjectionHead(backbone.dim, m.proj_hidden_dim, m.proj_dim)
    backbone_m, head_m = (copy.deepcopy(x).requires_grad_(False) for x in (backbone, head))
    criterion = L.NTXentLoss(temperature=m.temperature, memory_bank_size=(m.queue_size, m.proj_dim))
    opt = make_optimizer(cfg, list(backbone.parameters()) + list(head.parameters()))
    g_aug, g_data = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 2)
    steps_per_epoch = len(train_idx) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    for mod in (backbone, head, backbone_m, head_m):
        mod.train()
    for step in range(total):
        if step % steps_per_epoch == 0:
            perm = torch.randperm(len(train_idx), generator=g_data)
        rows = perm[(step % steps_per_epoch) * cfg.batch_size :][: cfg.batch_size].numpy()
        batch = torch.from_numpy(np.ascontiguousarray(images[train_idx[rows]]))
        v1, v2 = (ssl_view(batch, cfg.augment, crop, g_aug).contiguous(memory_format=layout) for _ in range(2))
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, total, steps_per_epoch)
        L.update_momentum(backbone, backbone_m, m.momentum)
        L.update_momentum(head, head_m, m.momentum)
        q = head(backbone(v1))
        with torch.no_grad():
            k = head_m(backbone_m(v2))
        loss = criterion(q, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return backbone.to(memory_format=torch.contiguous_format).eval()


def _ours(images, train_idx, cfg, crop: int, seed: int, ckpt):
    from finesyn.train import RunSpec, pretrain

    return pretrain(images, RunSpec("mocov2", False, cfg, crop, seed, f"parity-{seed}", ckpt), train_idx).backbone


def run(ctx: Context) -> dict:
    import tempfile
    from pathlib import Path

    L, reason = load_lightly(ctx.deps_dir)
    tid, what = "parity.mocov2", "|our MoCo v2 run − the lightly-built run|, seed-mean top-1, in binomial SEs"
    if L is None:
        return {"status": "skipped", "reason": reason, "targets": [target(tid, what, None, 2.0, "<=", "SE")]}
    cfg = default_pretrain_config({"methods": {"mocov2": {"queue_size": PARITY_QUEUE}}, "monitor_every_steps": 0})
    seeds, data = SEEDS, {}
    if ctx.quick:  # every code path on a tiny run; the numbers mean nothing
        cfg = cfg.model_copy(update={"epochs": 1, "batch_size": 16})
        seeds, data = (0,), {"train_per_class": 8, "test_per_class": 4}
    ds = default_dataset(data)
    tr = np.nonzero(ds.split == "train")[0]
    crop = ds.image_size
    runs = {"ours": [], "lightly": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="finesyn-parity-") as tmp:
        for seed in seeds:
            runs["ours"].append(probe_scores(_ours(ds.images, tr, cfg, crop, seed, Path(tmp) / str(seed)), ds, crop))
            runs["lightly"].append(probe_scores(lightly_pretrain(L, ds.images, tr, cfg, crop, seed), ds, crop))
            ctx.log(f"  parity seed {seed}: ours {runs['ours'][-1]}, lightly {runs['lightly'][-1]}")
    n_test = int((ds.split == "test").sum())
    out = {
        "seeds": list(seeds),
        "queue_size": PARITY_QUEUE,
        "steps": len(tr) // cfg.batch_size * cfg.epochs,
        "n_test": n_test,
        "wall_s": round(time.perf_counter() - t0, 1),
        "runs": runs,
        "lightly_version": L.version,
        "targets": [],
    }
    for metric in ("linear_top1", "knn20_top1"):
        a, b = (statistics.mean(r[metric] for r in runs[k]) for k in ("ours", "lightly"))
        p = (a + b) / 200
        se = 100 * (p * (1 - p) / n_test) ** 0.5
        out[metric] = {"ours_mean": a, "lightly_mean": b, "diff": a - b, "binomial_se": se}
        out["targets"].append(target(f"{tid}.{metric}", f"{what} ({metric})", abs(a - b) / se if se else None, 2.0, "<=", "SE"))
    return out

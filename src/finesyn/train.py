"""The pretraining loop: L = L_C (+ α·L_R + ν·L_Cp), with exact resume.

A checkpoint holds everything the next step depends on (model incl. momentum encoder and
queue, decoder and its running statistics, optimiser, AMP scaler, RNG states, the epoch's
data order and position), so a resumed run is bit-identical to an uninterrupted one on CPU.

Under torchrun (`finesyn.distributed`) the same loop runs on every rank on its shard of each
global batch, inside one DistributedDataParallel module; rank 0 writes the checkpoints (with
every rank's augmentation-generator state) and every rank resumes from the same one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from finesyn.errors import UserError
from finesyn import distributed
from finesyn.data.augment import ssl_view
from finesyn.device import amp_dtype, autocast, host_to_device, set_threads
from finesyn.io import atomic_write_bytes
from finesyn.methods import SSLMethod, build_method
from finesyn.models.backbone import Backbone, load_init
from finesyn.synth import SynthPairs

log = logging.getLogger("finesyn.train")


PAIR_ROWS = 8  # generated pairs kept for pairs.png (the first rows of the last step's pair batch)


class NonFiniteLossError(UserError, RuntimeError):
    pass


class Interrupted(UserError, RuntimeError):
    """Raised after a checkpoint was written on SIGTERM/SIGINT; rerunning the stage resumes."""


@dataclass
class RunSpec:
    method: str  # registry name or "none"
    synth: bool
    cfg: object  # PretrainConfig
    crop_size: int
    seed: int
    run_id: str  # hash of everything above + the data: a checkpoint of another run is never resumed
    ckpt_dir: Path
    fault_nan_at_step: int | None = field(default=None)  # test hook: force a non-finite L_C at this step
    # test hook: (local uint8 batch, its dataset indices, step) -> (v1, v2) replaces the augmentation
    views: Callable[[torch.Tensor, np.ndarray, int], tuple[torch.Tensor, torch.Tensor]] | None = field(default=None)


@dataclass
class TrainResult:
    backbone: Backbone
    method: SSLMethod | None
    synth: SynthPairs | None
    steps: int
    resumed_from: int | None
    pair_images: tuple | None
    history: list[dict]
    monitor: list[dict] = field(default_factory=list)  # {"step", "val/<metric>": ...} from the learning monitor


def build_models(spec: RunSpec, num_train: int, num_classes: int | None = None) -> tuple[Backbone, SSLMethod | None, SynthPairs | None]:
    torch.manual_seed(spec.seed)
    backbone = Backbone(spec.cfg.backbone, spec.cfg.stem, spec.cfg.pool)
    load_init(backbone, spec.cfg.init)
    if spec.method == "none":
        return backbone, None, None
    method = build_method(spec.method, backbone, spec.cfg, num_train, num_classes)
    synth = SynthPairs.from_config(backbone.dim, spec.crop_size, spec.cfg.synth) if spec.synth else None
    return backbone, method, synth


def param_groups(method: SSLMethod, synth: SynthPairs | None) -> list[dict]:
    """The scheduled group, then (if the method has one) the group kept at the base lr."""
    fixed = {id(p) for p in method.fixed_lr_parameters()}
    trainable = [p for m in (method, synth) if m is not None for p in m.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in fixed], "fixed_lr": False}]
    if fixed:
        groups.append({"params": [p for p in trainable if id(p) in fixed], "fixed_lr": True})
    return groups


def set_lr(opt: torch.optim.Optimizer, cfg, step: int, total: int, steps_per_epoch: int) -> None:
    """Every scheduled group follows lr_at; a fixed_lr group stays at pretrain.lr."""
    scheduled = lr_at(cfg, step, total, steps_per_epoch)
    for group in opt.param_groups:
        group["lr"] = cfg.lr if group.get("fixed_lr") else scheduled


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    """pretrain.optimizer; the schedule (lr_at) sets every group's lr before each step."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(cfg, step: int, total: int, steps_per_epoch: int) -> float:
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


# ----------------------------------------------------------------------------- checkpoints
# Layout: <ckpt_dir>/<run_id>/step_<step>.pt, ckpt_dir being checkpoints/<dataset>/<experiment>/seed<k>.
# A run prunes and resumes only its own directory, so a settings change never deletes the new run's
# checkpoints, and changing back finds the old run's. Other runs are kept up to
# pretrain.keep_other_runs (the most recently written or resumed); the oldest are deleted.
def run_checkpoint_dir(spec: RunSpec) -> Path:
    return spec.ckpt_dir / spec.run_id


def _ckpt_path(d: Path, step: int) -> Path:
    return d / f"step_{step:08d}.pt"


def save_checkpoint(spec: RunSpec, state: dict, keep: int) -> Path:
    buf = io.BytesIO()
    torch.save({"run_id": spec.run_id, **state}, buf)
    run_dir = run_checkpoint_dir(spec)
    path = atomic_write_bytes(_ckpt_path(run_dir, state["step"]), buf.getvalue())
    for old in sorted(run_dir.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    for tmp in run_dir.glob(".step_*.tmp"):  # left by a write that was killed (stage locks: no other writer)
        tmp.unlink(missing_ok=True)
    _prune_other_runs(spec.ckpt_dir, run_dir, spec.cfg.keep_other_runs)
    return path


def _other_runs(root: Path, current: Path) -> list[tuple[float, Path, list[Path]]]:
    """(newest mtime, directory, its checkpoint files) of every other run, newest first. Checkpoints
    directly in `root` (the layout before per-run directories) count as one run."""
    groups = [(d, list(d.glob("step_*.pt")) + list(d.glob(".step_*.tmp"))) for d in root.iterdir() if d.is_dir() and d != current]
    groups.append((root, list(root.glob("step_*.pt"))))
    return sorted(((max(f.stat().st_mtime for f in files), d, files) for d, files in groups if files), key=lambda g: -g[0])


def _prune_other_runs(root: Path, current: Path, keep_other: int) -> None:
    for _, d, files in _other_runs(root, current)[keep_other:]:
        for f in files:
            f.unlink(missing_ok=True)
        if d != root:
            with contextlib.suppress(OSError):  # not empty: something that is not a checkpoint stays
                d.rmdir()
        log.info("deleted the checkpoints of an older run in %s (pretrain.keep_other_runs = %d)", d, keep_other)


def _read_checkpoint(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, loudly
        warnings.warn(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying the previous one", stacklevel=3)
        return None


def load_latest_checkpoint(spec: RunSpec) -> dict | None:
    """Newest readable checkpoint of this run, whatever other runs left next to it; a truncated or
    corrupt one is skipped with a warning. Resuming marks the run as recently used (kept longest)."""
    if not spec.ckpt_dir.is_dir():
        return None
    run_dir = run_checkpoint_dir(spec)
    legacy = sorted(spec.ckpt_dir.glob("step_*.pt"), reverse=True)  # written before per-run directories
    for path in sorted(run_dir.glob("step_*.pt"), reverse=True) + legacy:
        state = _read_checkpoint(path)
        if state is None:
            continue
        if state.get("run_id") != spec.run_id:
            if path.parent == run_dir:
                warnings.warn(f"checkpoint {path} belongs to run {state.get('run_id')!r}, not {spec.run_id!r}: skipped", stacklevel=2)
            continue
        with contextlib.suppress(OSError):
            os.utime(path)
        return state
    others = [d.name if d != spec.ckpt_dir else "files of the old flat layout" for _, d, _ in _other_runs(spec.ckpt_dir, run_dir)]
    if others:
        log.info("no checkpoint of run %s in %s (kept: %s, whose settings or data differ): starting at step 0",
                 spec.run_id, spec.ckpt_dir, ", ".join(others))
    return None


# ----------------------------------------------------------------------------- the loop
class Objective(nn.Module):
    """The step's losses as one module, so that DistributedDataParallel wraps a single forward."""

    def __init__(self, method: SSLMethod, synth: SynthPairs | None, pairs: bool = True):
        super().__init__()
        self.method, self.synth, self.pairs = method, synth, pairs

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, g_synth: torch.Generator):
        out = self.method.ssl_loss(v1, v2)
        s = self.synth(self.method, out, v1, g_synth, pairs=self.pairs) if self.synth is not None else None
        return out, s


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the end of the current step and stops."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def pretrain(
    images: np.ndarray,
    spec: RunSpec,
    indices: np.ndarray | None = None,
    on_log: Callable[[dict], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    dist: distributed.DistContext | None = None,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
    monitor: Callable[[Backbone], dict] | None = None,
) -> TrainResult:
    """Train on `images[indices]` ((N, S, S, 3) uint8, may be a memmap). Resumes from spec.ckpt_dir.

    `labels` (aligned with `images`) and `num_classes` are read only by the supervised reference.
    `monitor` (e.g. finesyn.eval.monitor.KnnMonitor) scores the encoder at step 0, every
    `pretrain.monitor_every_steps` and at the end (main rank; eval mode, no random draws, so it
    changes nothing in the run).

    `dist`: this process's place in a torchrun job (default: an initialised process group if
    there is one, else a single process); `pretrain.batch_size` is then the global batch.
    """
    cfg = spec.cfg
    set_threads(cfg.threads)
    ctx = dist if dist is not None else distributed.current(cfg.device)
    device = ctx.device
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    n = len(indices)
    if labels is not None and num_classes is None:
        num_classes = int(np.max(labels)) + 1
    backbone, method, synth = build_models(spec, n, num_classes)
    if method is not None and method.uses_labels and labels is None:
        raise ValueError(f"method {spec.method!r} trains on the labels: pass labels= to pretrain()")
    if method is None or cfg.epochs == 0:
        return TrainResult(backbone, method, synth, 0, None, None, [])
    if cfg.batch_size > n:
        raise ValueError(f"pretrain.batch_size ({cfg.batch_size}) exceeds the {n} training images")
    local_bs = distributed.local_batch_size(cfg.batch_size, ctx.world_size)

    method.to(device)
    if synth is not None:
        synth.to(device)
    if cfg.channels_last:  # conv weights NHWC here, the views in the loop; undone before returning
        _set_memory_format((method, synth), torch.channels_last)
    method.distribute(ctx)  # each method's multi-process rule (SyncBN, gathers); no-op for one process
    if synth is not None:
        synth.distribute(ctx)
    if cfg.compile:
        _compile_backbones(method)
    make_pairs = synth is not None and cfg.nu > 0  # ν = 0 (α-only runs): L_R only, no pair, no L_Cp
    objective = distributed.data_parallel(Objective(method, synth, pairs=make_pairs), ctx)  # DDP averages gradients, once
    opt = make_optimizer(cfg, param_groups(method, synth))
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    # augmentation: one stream per rank; data order: the same on every rank; the module's draws
    # (masks, noise, for the global batch): the same on every rank -- one process uses g_aug for both.
    g_aug = torch.Generator(device=device).manual_seed(distributed.aug_seed(spec.seed, ctx))
    g_data = torch.Generator().manual_seed(spec.seed + 2)
    g_synth = torch.Generator(device=device).manual_seed(spec.seed + 1) if ctx.enabled else g_aug

    steps_per_epoch = n // cfg.batch_size  # drop_last: a tiny last batch would wreck BN statistics
    total = steps_per_epoch * cfg.epochs
    step, perm, history, resumed_from, pair_images, monitored = 0, None, [], None, None, []
    state = load_latest_checkpoint(spec)
    seen = ctx.all_gather_object(None if state is None else state["step"])
    if len(set(seen)) > 1:
        raise RuntimeError(f"ranks found different checkpoints in {spec.ckpt_dir} (steps {seen}): it must be one directory shared by all ranks")
    if state is not None:
        method.load_state_dict(state["method"])
        if synth is not None:
            synth.load_state_dict(state["synth"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _restore_generators(state, ctx, spec.seed, g_aug, g_synth)
        g_data.set_state(state["g_data"])
        torch.set_rng_state(state["torch_rng"])
        step, perm, history = state["step"], state["perm"], state["history"]
        pair_images = state.get("pair_images")
        monitored = state.get("monitor", [])
        resumed_from = step
        log.info("resumed from step %d of %d (%s)", step, total, spec.ckpt_dir)

    def snapshot() -> dict:
        return {
            "step": step,
            "perm": perm,
            "method": method.state_dict(),
            "synth": synth.state_dict() if synth is not None else None,
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "g_aug": g_aug.get_state(),
            "g_aug_ranks": ctx.all_gather_object(g_aug.get_state()),  # collective: every rank calls snapshot()
            "g_synth": g_synth.get_state(),
            "world_size": ctx.world_size,
            "g_data": g_data.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "monitor": monitored,
            # the pairs.png rows: a run resumed from its last checkpoint takes no step but still writes them
            "pair_images": None if pair_images is None else tuple(t.cpu() for t in pair_images),
        }

    def monitor_due() -> bool:
        every = cfg.monitor_every_steps
        return monitor is not None and ctx.is_main and every > 0 and (step % every == 0 or step == total)

    def run_monitor() -> None:
        rec = {"step": step, **{f"val/{k}": v for k, v in monitor(backbone).items()}}
        objective.train()  # extraction switched the encoder to eval mode
        monitored.append(rec)
        if on_log:
            on_log(rec)

    if step == 0 and monitor_due():
        run_monitor()
    objective.train()
    t_last, imgs_since = time.perf_counter(), 0
    with _StopFlag() as stop:
        while step < total:
            pos = step % steps_per_epoch
            if pos == 0:
                perm = torch.randperm(n, generator=g_data)
            rows = perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size][ctx.rank * local_bs : (ctx.rank + 1) * local_bs]
            idx = indices[rows.numpy()]  # this rank's shard of the global batch
            batch = host_to_device(torch.from_numpy(np.ascontiguousarray(images[idx])), device)
            method.set_indices(host_to_device(torch.from_numpy(np.asarray(idx, dtype=np.int64)), device))  # MoCo: own keys masked
            if method.uses_labels:
                method.set_targets(host_to_device(torch.from_numpy(np.asarray(labels[idx], dtype=np.int64)), device))
            set_lr(opt, cfg, step, total, steps_per_epoch)
            with autocast(device, dtype):
                if spec.views is not None:
                    v1, v2 = spec.views(batch, idx, step)
                else:
                    v1 = ssl_view(batch, cfg.augment, spec.crop_size, g_aug)
                    v2 = ssl_view(batch, cfg.augment, spec.crop_size, g_aug) if method.views > 1 else v1
                if cfg.channels_last:
                    v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
                out, s = objective(v1, v2, g_synth)
                terms = {"L_C": out.loss}
                if spec.fault_nan_at_step is not None and step == spec.fault_nan_at_step:
                    terms["L_C"] = out.loss * float("nan")
                total_loss = terms["L_C"]
                n_sel = 0
                if s is not None:
                    terms["L_R"], n_sel = s.recon, s.n_selected
                    total_loss = total_loss + cfg.alpha * s.recon
                    if make_pairs:
                        terms["L_Cp"] = s.pair
                        total_loss = total_loss + cfg.nu * s.pair
                    if s.images is not None:
                        pair_images = tuple(t[:PAIR_ROWS] for t in s.images)
            # the global batch's losses (mean over ranks), on every rank: logged, and checked together
            # so that a non-finite loss on one rank stops all of them at the same step
            values = [total_loss, *terms.values()]
            dt = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
            reduced = ctx.all_reduce_sum(torch.stack([v.detach().to(dt) for v in values])) / ctx.world_size
            total_value, term_values = reduced[0], dict(zip(terms, reduced[1:]))
            for name, value in term_values.items():
                if not torch.isfinite(value):
                    raise NonFiniteLossError(
                        f"{name} is {value.item()} at step {step} (epoch {step // steps_per_epoch}); "
                        f"the last good checkpoint is kept in {spec.ckpt_dir}"
                    )
            opt.zero_grad(set_to_none=True)
            scaler.scale(total_loss).backward()
            scaler.step(opt)
            scaler.update()
            method.after_step(step / total)  # progress k/K, k = 0..K-1 (BYOL's momentum schedule)
            step += 1
            imgs_since += len(idx) * ctx.world_size

            if step % cfg.log_every_steps == 0 or step == total:
                now = time.perf_counter()
                rec = {"step": step, "epoch": (step - 1) // steps_per_epoch, "lr": opt.param_groups[0]["lr"], "loss": total_value.item()}
                rec.update({k: v.item() for k, v in term_values.items()})
                if make_pairs:
                    rec["n_selected"] = n_sel
                rec["images_per_s"] = imgs_since / max(now - t_last, 1e-9)
                t_last, imgs_since = now, 0
                history.append(rec)
                if on_log:
                    on_log(rec)
            if monitor_due():
                run_monitor()
            if progress:
                progress(step, total)
            epoch_end = step % steps_per_epoch == 0
            stopping = ctx.any(stop.signum is not None)  # torchrun signals every rank, not at the same instant
            if step % cfg.checkpoint_every_steps == 0 or epoch_end or stopping:
                snap = snapshot()
                if ctx.is_main:
                    save_checkpoint(spec, snap, cfg.keep_checkpoints)
                ctx.barrier()  # no rank runs ahead of (or resumes from) a checkpoint still being written
            if stopping:
                raise Interrupted(f"stopped by signal {stop.signum or 'on another rank'} at step {step}/{total}; checkpoint saved in {spec.ckpt_dir}")
    if cfg.channels_last:  # encoder.pt holds default-layout tensors whatever the flag (same bytes)
        _set_memory_format((method, synth), torch.contiguous_format)
    return TrainResult(backbone.cpu(), method.cpu(), synth.cpu() if synth else None, step, resumed_from, pair_images, history, monitored)


def _set_memory_format(modules, fmt: torch.memory_format) -> None:
    for m in modules:
        if m is not None:
            m.to(memory_format=fmt)  # only 4-D tensors (conv weights) change layout; values are copied exactly


def _compile_backbones(method: SSLMethod) -> None:
    """torch.compile every backbone of the method (online and momentum copies) in place.

    In place (nn.Module.compile) rather than `torch.compile(module)`: that wrapper prefixes every
    state_dict key with `_orig_mod.`, which would make checkpoints and encoder.pt depend on the flag.
    """
    for m in method.modules():
        if isinstance(m, Backbone):
            m.compile()


def _restore_generators(state: dict, ctx: distributed.DistContext, seed: int, g_aug: torch.Generator, g_synth: torch.Generator) -> None:
    """Each rank continues its own augmentation stream; with another number of processes that is
    impossible, so the streams are reseeded (deterministically) and the run is no longer exact."""
    saved_world = state.get("world_size", 1)
    if saved_world == ctx.world_size:
        g_aug.set_state(state["g_aug_ranks"][ctx.rank] if "g_aug_ranks" in state else state["g_aug"])
        if g_synth is not g_aug:
            g_synth.set_state(state["g_synth"])
        return
    warnings.warn(
        f"resuming a {saved_world}-process checkpoint with {ctx.world_size} processes: augmentation and module "
        f"random streams are reseeded, so the result will not equal an uninterrupted run",
        stacklevel=3,
    )
    g_aug.manual_seed(distributed.aug_seed(seed, ctx, salt=1 + state["step"]))
    if g_synth is not g_aug:
        g_synth.manual_seed(distributed.aug_seed(seed, distributed.SINGLE, salt=1 + state["step"]))


def encoder_artifact(result: TrainResult, spec: RunSpec, extra: dict) -> bytes:
    """The final encoder file that extract reads: backbone (+ projector) weights and how to rebuild them."""
    m = result.method
    state = {
        "arch": result.backbone.arch,
        "stem": result.backbone.stem,
        "pool": result.backbone.pool,
        "feature_dim": result.backbone.dim,
        "method": spec.method,
        "backbone": result.backbone.state_dict(),
        "projector": m.projector.state_dict() if m is not None else None,
        "projector_spec": m.projector_spec if m is not None else None,
        "run_id": spec.run_id,
        "steps": result.steps,
        **extra,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


__all__ = ["RunSpec", "TrainResult", "pretrain", "encoder_artifact", "NonFiniteLossError", "Interrupted"]

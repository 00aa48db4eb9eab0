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
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from finesyn import distributed
from finesyn.checkpoints import load_latest_checkpoint, nonfinite_models, restore_generators, run_checkpoint_dir, save_checkpoint
from finesyn.data.augment import ssl_view
from finesyn.device import amp_dtype, autocast, host_to_device, set_threads
from finesyn.errors import UserError
from finesyn.finite import named, nonfinite_tensors
from finesyn.methods import SSLMethod, build_method
from finesyn.models.backbone import Backbone, load_init
from finesyn.objective import Objective, StepLosses
from finesyn.pairs import SynthPairs
from finesyn.run_identity import RunSpec

if TYPE_CHECKING:
    from finesyn.methods.supervised import Supervised

log = logging.getLogger("finesyn.train")


PAIR_ROWS = 8  # generated pairs kept for pairs.png (the first rows of the last step's pair batch)


class NonFiniteLossError(UserError, RuntimeError):
    pass


class NonFiniteWeightsError(NonFiniteLossError):
    """Weights or BN statistics hold inf/NaN while the loss is still finite: the run diverged."""


class Interrupted(UserError, RuntimeError):
    """Raised after a checkpoint was written on SIGTERM/SIGINT; rerunning the stage resumes."""


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
    synth = SynthPairs.from_config(backbone.dim, spec.crop_size, spec.cfg.synth, spec.cfg.augment) if spec.synth else None
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


# ----------------------------------------------------------------------------- the loop
Views = Callable[[torch.Tensor, np.ndarray, int], tuple[torch.Tensor, torch.Tensor]]  # (uint8 batch, indices, step) -> (v1, v2)


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the end of the current step and stops."""

    def __init__(self) -> None:
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
    views: Views | None = None,
    on_resume: Callable[[list[dict], list[dict]], None] | None = None,
    health: Callable[[SSLMethod, SynthPairs], dict] | None = None,
    pair_module: nn.Module | None = None,
) -> TrainResult:
    """Train on `images[indices]` ((N, S, S, 3) uint8, may be a memmap). Resumes from spec.ckpt_dir.

    `labels` (aligned with `images`) and `num_classes` are read only by the supervised reference.
    `monitor` (e.g. finesyn.eval.monitor.KnnMonitor) scores the encoder at step 0, every
    `pretrain.monitor_every_steps` and at the end (main rank; eval mode, no random draws, so it
    changes nothing in the run). `views` replaces the augmentation (benchmarks and tests feed
    fixed views). `dist`: this process's place in a torchrun job (default: an initialised process
    group if there is one, else a single process); `pretrain.batch_size` is then the global batch.
    `on_resume(history, monitor)` receives a resumed run's checkpointed records (the steps before the
    ones `on_log` will report), so live curves can start over from them. `health(method, synth)` (e.g.
    synth.health.pair_health on a fixed batch) joins the monitor's points as health/<key> in a module
    run with pairs, one process only; it must leave the run unchanged (it works on copies).
    `pair_module` stands in for a module run's SynthPairs (SynthPairs' forward and `distribute`: the
    module study's oracle pair, finesyn.pairs.oracle); the run's init and views are those without it.
    """
    set_threads(spec.cfg.threads)
    ctx = dist if dist is not None else distributed.current(spec.cfg.device)
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    if labels is not None and num_classes is None:
        num_classes = int(np.max(labels)) + 1
    backbone, method, synth = build_models(spec, len(indices), num_classes)
    if pair_module is not None:
        if synth is None:
            raise ValueError("pretrain(pair_module=) replaces the module of a module run: spec.synth must be true")
        synth = cast(SynthPairs, pair_module)  # duck-typed: forward(method, out, x1, g, pairs) -> SynthLosses, distribute(ctx)
    if method is not None and method.uses_labels and labels is None:
        raise ValueError(f"method {spec.method!r} trains on the labels: pass labels= to pretrain()")
    if method is None or spec.cfg.epochs == 0:
        return TrainResult(backbone, method, synth, 0, None, None, [])
    loop = _Loop.build(spec, ctx, images, indices, labels, backbone, method, synth)
    loop.resume()
    if on_resume is not None and loop.resumed_from is not None:
        on_resume(loop.history, loop.monitored)
    if progress:
        progress(loop.step, loop.total)  # the total (and where a resumed run starts) before the first step
    loop.health = health if loop.pairs and not ctx.enabled else None  # on rank 0 alone, a copy's SyncBN would wait for the others
    if loop.step == 0:
        loop.maybe_monitor(monitor, on_log)
    loop.objective.train()
    rate = _Rate()
    with _StopFlag() as stop:
        while loop.step < loop.total:
            idx, batch = loop.next_batch()
            with autocast(loop.ctx.device, loop.dtype):
                v1, v2 = views(batch, idx, loop.step) if views is not None else loop.augment(batch)
                losses = loop.objective(*loop.layout(v1, v2), loop.g_synth)
            values = loop.optimise(losses)
            rate.add(len(idx) * ctx.world_size)
            if loop.step % spec.cfg.log_every_steps == 0 or loop.step == loop.total:
                loop.log(values, losses.n_selected, rate.per_second(), on_log)
            loop.maybe_monitor(monitor, on_log)
            if progress:
                progress(loop.step, loop.total)
            stopping = ctx.any(stop.signum is not None)  # torchrun signals every rank, not at the same instant
            if loop.step % spec.cfg.checkpoint_every_steps == 0 or loop.step % loop.steps_per_epoch == 0 or stopping:
                loop.checkpoint()
            if stopping:
                raise Interrupted(
                    f"stopped by signal {stop.signum or 'on another rank'} at step {loop.step}/{loop.total}; checkpoint saved in {run_checkpoint_dir(spec)}"
                )
    return loop.result()


class _Rate:
    """Images per second since the last call of `per_second` (the log's images_per_s)."""

    def __init__(self):
        self.since, self.images = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.images += n

    def per_second(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.since, 1e-9)
        self.since, self.images = now, 0
        return rate


@dataclass
class _Loop:
    """A run's train state -- models, optimiser, generators, position, records -- and its step parts.

    `state_dict` is exactly what a checkpoint holds: everything the next step depends on.
    """

    spec: RunSpec
    ctx: distributed.DistContext
    images: np.ndarray
    indices: np.ndarray
    labels: np.ndarray | None
    backbone: Backbone
    method: SSLMethod
    synth: SynthPairs | None
    objective: nn.Module  # Objective; DistributedDataParallel(Objective) under torchrun
    pairs: bool  # the module makes pairs (ν > 0)
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # autocast's, None = full precision
    g_aug: torch.Generator  # augmentation: one stream per rank
    g_data: torch.Generator  # data order: the same on every rank
    g_synth: torch.Generator  # the module's draws for the global batch: the same on every rank, never g_aug (paired runs)
    steps_per_epoch: int
    local_bs: int
    step: int = 0
    perm: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    monitored: list[dict] = field(default_factory=list)
    pair_images: tuple | None = None
    resumed_from: int | None = None
    health: Callable | None = None  # the module's health at the monitor points (pretrain's `health`)

    @classmethod
    def build(cls, spec, ctx, images, indices, labels, backbone, method, synth) -> _Loop:
        cfg, device, n = spec.cfg, ctx.device, len(indices)
        if cfg.batch_size > n:
            raise ValueError(f"pretrain.batch_size ({cfg.batch_size}) exceeds the {n} training images")
        method.to(device)
        if synth is not None:
            synth.to(device)
        if cfg.channels_last:  # conv weights NHWC here, the views in `layout`; undone in `result`
            _set_memory_format((method, synth), torch.channels_last)
        method.distribute(ctx)  # each method's multi-process rule (SyncBN, gathers); no-op for one process
        if synth is not None:
            synth.distribute(ctx)
        if cfg.compile:
            _compile_backbones(method)
        objective = Objective(method, synth, cfg.alpha, cfg.nu)
        dtype = amp_dtype(device, cfg.amp)
        g_aug = torch.Generator(device=device).manual_seed(distributed.aug_seed(spec.seed, ctx))
        g_data = torch.Generator().manual_seed(spec.seed + 2)
        g_synth = torch.Generator(device=device).manual_seed(distributed.synth_seed(spec.seed))
        return cls(
            spec, ctx, images, indices, labels, backbone, method, synth,
            distributed.data_parallel(objective, ctx), objective.pairs,  # DDP averages gradients, once
            make_optimizer(cfg, param_groups(method, synth)), torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), dtype,
            g_aug, g_data, g_synth, cfg.steps_per_epoch(n),
            distributed.local_batch_size(cfg.batch_size, ctx.world_size),
        )  # fmt: skip

    @property
    def total(self) -> int:
        return self.spec.cfg.total_steps(len(self.indices))

    # -- one step ---------------------------------------------------------------------
    def next_batch(self) -> tuple[np.ndarray, torch.Tensor]:
        """This rank's shard of the step's global batch: dataset indices and uint8 images (on the device)."""
        cfg, ctx, device = self.spec.cfg, self.ctx, self.ctx.device
        pos = self.step % self.steps_per_epoch
        if pos == 0:
            self.perm = torch.randperm(len(self.indices), generator=self.g_data)
        assert self.perm is not None  # drawn at an epoch's first step (or restored with it by a resume)
        rows = self.perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size][ctx.rank * self.local_bs : (ctx.rank + 1) * self.local_bs]
        idx = self.indices[rows.numpy()]
        batch = host_to_device(torch.from_numpy(np.ascontiguousarray(self.images[idx])), device)
        self.method.set_indices(host_to_device(torch.from_numpy(np.asarray(idx, dtype=np.int64)), device))  # MoCo: own keys masked
        if self.method.uses_labels:  # the supervised reference; pretrain() refuses it without labels
            assert self.labels is not None
            cast("Supervised", self.method).set_targets(
                host_to_device(torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64)), device)
            )
        set_lr(self.opt, cfg, self.step, self.total, self.steps_per_epoch)
        return idx, batch

    def augment(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two SSL views; a method reading one view gets it twice (no second view is drawn)."""
        cfg = self.spec.cfg
        v1 = ssl_view(batch, cfg.augment, self.spec.crop_size, self.g_aug)
        return v1, ssl_view(batch, cfg.augment, self.spec.crop_size, self.g_aug) if self.method.views > 1 else v1

    def layout(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The views in the models' memory format (NHWC under pretrain.channels_last)."""
        if not self.spec.cfg.channels_last:
            return views
        return tuple(v.contiguous(memory_format=torch.channels_last) for v in views)

    def optimise(self, losses: StepLosses) -> dict[str, torch.Tensor]:
        """Check the global batch's losses, then one optimiser step; returns them (mean over ranks)."""
        if losses.pair_images is not None:
            self.pair_images = tuple(t[:PAIR_ROWS] for t in losses.pair_images)
        # the global batch's losses on every rank: logged, and checked together, so that a
        # non-finite loss on one rank stops all of them at the same step
        values = [losses.total, *losses.terms.values()]
        dt = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
        reduced = self.ctx.all_reduce_sum(torch.stack([v.detach().to(dt) for v in values])) / self.ctx.world_size
        out = {"loss": reduced[0], **dict(zip(losses.terms, reduced[1:]))}
        for name, value in list(out.items())[1:]:
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} is {value.item()} at step {self.step} (epoch {self.step // self.steps_per_epoch}); the last good checkpoint is kept in {self.spec.ckpt_dir}"
                )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.method.after_step(self.step / self.total)  # progress k/K, k = 0..K-1 (BYOL's momentum schedule)
        self.step += 1
        return out

    # -- records and state ------------------------------------------------------------
    def log(self, values: dict[str, torch.Tensor], n_selected: int, images_per_s: float, on_log) -> None:
        rec = {"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch, "lr": self.opt.param_groups[0]["lr"]}
        rec.update({k: v.item() for k, v in values.items()})
        if self.pairs:
            rec["n_selected"] = n_selected
        rec["images_per_s"] = images_per_s
        self.history.append(rec)
        if on_log:
            on_log(rec)

    def maybe_monitor(self, monitor, on_log) -> None:
        every = self.spec.cfg.monitor_every_steps
        if monitor is None or not self.ctx.is_main or every == 0 or (self.step % every and self.step != self.total):
            return
        rec = {"step": self.step, **{f"val/{k}": v for k, v in monitor(self.backbone).items()}}
        if self.health is not None:
            rec.update({f"health/{k}": v for k, v in self.health(self.method, self.synth).items()})
        self.objective.train()  # extraction switched the encoder to eval mode
        self.monitored.append(rec)
        if on_log:
            on_log(rec)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "perm": self.perm,
            "method": self.method.state_dict(),
            "synth": self.synth.state_dict() if self.synth is not None else None,
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "g_aug": self.g_aug.get_state(),
            "g_aug_ranks": self.ctx.all_gather_object(self.g_aug.get_state()),  # collective: every rank calls state_dict()
            "g_synth": self.g_synth.get_state(),
            "world_size": self.ctx.world_size,
            "g_data": self.g_data.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "monitor": self.monitored,
            # the pairs.png rows: a run resumed from its last checkpoint takes no step but still writes them
            "pair_images": None if self.pair_images is None else tuple(t.cpu() for t in self.pair_images),
        }

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        if self.synth is not None:
            self.synth.load_state_dict(state["synth"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        restore_generators(state, self.ctx, self.spec.seed, self.g_aug, self.g_synth)
        self.g_data.set_state(state["g_data"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.perm, self.history = state["step"], state["perm"], state["history"]
        self.pair_images, self.monitored = state.get("pair_images"), state.get("monitor", [])

    def resume(self) -> None:
        """Continue from the newest checkpoint of this run, if there is one (the same on every rank)."""
        state = load_latest_checkpoint(self.spec)
        seen = self.ctx.all_gather_object(None if state is None else state["step"])
        if len(set(seen)) > 1:
            raise RuntimeError(
                f"ranks found different checkpoints in {self.spec.ckpt_dir} (steps {seen}): it must be one directory shared by all ranks"
            )
        if state is not None:
            self.load_state_dict(state)
            self.resumed_from = self.step
            log.info("resumed from step %d of %d (%s)", self.step, self.total, self.spec.ckpt_dir)

    def checkpoint(self) -> None:
        """Save the loop's state; a diverged model is refused, so every kept checkpoint is a good one."""
        state = self.state_dict()  # collective (every rank), so it comes before the check that may raise
        bad = nonfinite_models(state)
        if self.ctx.any(bool(bad)):
            cfg = self.spec.cfg
            raise NonFiniteWeightsError(
                f"the run diverged: {named(bad) or 'another rank'} hold inf/NaN at step {self.step} (epoch "
                f"{self.step // self.steps_per_epoch}) while the loss is finite; no checkpoint or encoder is written. "
                f"Lower pretrain.lr (now {cfg.lr}) or raise pretrain.warmup_epochs (now {cfg.warmup_epochs}); "
                f"the last good checkpoint is kept in {run_checkpoint_dir(self.spec)}"
            )
        if self.ctx.is_main:
            save_checkpoint(self.spec, state, self.spec.cfg.keep_checkpoints)
        self.ctx.barrier()  # no rank runs ahead of (or resumes from) a checkpoint still being written

    def result(self) -> TrainResult:
        if self.spec.cfg.channels_last:  # encoder.pt holds default-layout tensors whatever the flag (same bytes)
            _set_memory_format((self.method, self.synth), torch.contiguous_format)
        synth = self.synth.cpu() if self.synth is not None else None
        return TrainResult(
            self.backbone.cpu(), self.method.cpu(), synth, self.step, self.resumed_from, self.pair_images, self.history, self.monitored
        )


def _set_memory_format(modules, fmt: torch.memory_format) -> None:
    for m in modules:
        if m is not None:
            m.to(memory_format=fmt)  # only 4-D tensors (conv weights) change layout; values are copied exactly


@contextlib.contextmanager
def layout_for_eval(modules, channels_last: bool):
    """The modules in NHWC inside the block where pretrain.channels_last asks for it, the default layout after
    (what encoder.pt holds). The end-of-run checks run on a finished run's models: on CPU the convnet's eval
    forwards take half the time in NHWC."""
    if not channels_last:
        yield
        return
    _set_memory_format(modules, torch.channels_last)
    try:
        yield
    finally:
        _set_memory_format(modules, torch.contiguous_format)


def _compile_backbones(method: SSLMethod) -> None:
    """torch.compile every backbone of the method (online and momentum copies) in place.

    In place (nn.Module.compile) rather than `torch.compile(module)`: that wrapper prefixes every
    state_dict key with `_orig_mod.`, which would make checkpoints and encoder.pt depend on the flag.
    """
    for m in method.modules():
        if isinstance(m, Backbone):
            m.compile()


def encoder_artifact(result: TrainResult, spec: RunSpec, extra: dict) -> bytes:
    """The final encoder file that extract reads: backbone (+ projector) weights and how to rebuild them."""
    m = result.method
    bad = nonfinite_tensors({"backbone": result.backbone.state_dict(), "projector": m.projector.state_dict() if m is not None else {}})
    if bad:
        raise NonFiniteWeightsError(f"the trained encoder of {spec.run_id} holds inf/NaN in {named(bad)}: not written; lower pretrain.lr")
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


__all__ = [
    "RunSpec", "TrainResult", "pretrain", "encoder_artifact", "NonFiniteLossError", "NonFiniteWeightsError", "Interrupted",
    "load_latest_checkpoint", "run_checkpoint_dir", "save_checkpoint",  # finesyn.checkpoints', here for callers of the loop
]  # fmt: skip

"""Checkpoints of a pretraining run: where they live, writing, pruning, and finding the newest.

Layout: <ckpt_dir>/<run_id>/step_<step>.pt, ckpt_dir being checkpoints/<dataset>/<experiment>/seed<k>.
A run prunes and resumes only its own directory, so a settings change never deletes the new run's
checkpoints, and changing back finds the old run's. Within it, pruning counts only readable files of this
run id; anything else named step_*.pt (another run's file copied in, a corrupt file) is moved to
<run_id>/set_aside/ with a warning, never deleted and never kept in place of this run's. Other runs are kept up to
pretrain.keep_other_runs (the most recently written or resumed); the oldest are deleted.
What a checkpoint holds is the loop's train state (finesyn.train: `_Loop.state_dict`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import torch

from finesyn import distributed
from finesyn.finite import named, nonfinite_tensors
from finesyn.io import atomic_write_bytes
from finesyn.run_identity import RunSpec

log = logging.getLogger("finesyn.train")


def run_checkpoint_dir(spec: RunSpec) -> Path:
    return spec.ckpt_dir / spec.run_id


def _ckpt_path(d: Path, step: int) -> Path:
    return d / f"step_{step:08d}.pt"


def save_checkpoint(spec: RunSpec, state: dict, keep: int) -> Path:
    buf = io.BytesIO()
    torch.save({"run_id": spec.run_id, **state}, buf)
    run_dir = run_checkpoint_dir(spec)
    path = atomic_write_bytes(_ckpt_path(run_dir, state["step"]), buf.getvalue())
    own = _own_checkpoints(run_dir, spec.run_id)  # reads every step_*.pt back, the one just written too
    if path not in own:
        raise RuntimeError(f"checkpoint {path} was written but does not read back as run {spec.run_id!r}: check the disk and rerun")
    for old in sorted(own)[:-keep]:
        old.unlink(missing_ok=True)
    for tmp in run_dir.glob(".step_*.tmp"):  # left by a write that was killed (stage locks: no other writer)
        tmp.unlink(missing_ok=True)
    _prune_other_runs(spec.ckpt_dir, run_dir, spec.cfg.keep_other_runs)
    return path


def nonfinite_models(state: dict) -> list[str]:
    """The tensors of a checkpoint's method and module that hold inf/NaN (finite.nonfinite_tensors)."""
    return nonfinite_tensors({k: state.get(k) or {} for k in ("method", "synth")})


def _run_id_of(path: Path) -> str | None:
    """The run id a checkpoint file holds, None if it does not load (tensors are mapped, not read)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - whatever fails to load is not a checkpoint of this run
        return None
    return state.get("run_id") if isinstance(state, dict) else None


def _own_checkpoints(run_dir: Path, run_id: str) -> list[Path]:
    """This run's checkpoint files; every other step_*.pt in its directory is set aside, loudly."""
    own = []
    for f in run_dir.glob("step_*.pt"):
        found = _run_id_of(f)
        if found == run_id:
            own.append(f)
            continue
        aside = run_dir / "set_aside" / f.name
        aside.parent.mkdir(exist_ok=True)
        os.replace(f, aside)
        why = "is unreadable" if found is None else f"belongs to run {found!r}"
        warnings.warn(
            f"{f} {why}, not run {run_id!r}: moved to {aside} so that pruning cannot drop this run's checkpoints for it", stacklevel=3
        )
    return own


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
        bad = nonfinite_models(state)
        if bad:  # written before checkpoints were checked: resuming would continue a diverged run
            warnings.warn(f"checkpoint {path} holds inf/NaN in {named(bad)}: skipped", stacklevel=2)
            continue
        with contextlib.suppress(OSError):
            os.utime(path)
        return state
    others = [d.name if d != spec.ckpt_dir else "files of the old flat layout" for _, d, _ in _other_runs(spec.ckpt_dir, run_dir)]
    if others:
        log.info(
            "no checkpoint of run %s in %s (kept: %s, whose settings or data differ): starting at step 0",
            spec.run_id,
            spec.ckpt_dir,
            ", ".join(others),
        )
    return None


def restore_generators(state: dict, ctx: distributed.DistContext, seed: int, g_aug: torch.Generator, g_synth: torch.Generator) -> None:
    """Each rank continues its own augmentation stream; with another number of processes that is
    impossible, so the streams are reseeded (deterministically) and the run is no longer exact."""
    saved_world = state.get("world_size", 1)
    if saved_world == ctx.world_size:
        g_aug.set_state(state["g_aug_ranks"][ctx.rank] if "g_aug_ranks" in state else state["g_aug"])
        g_synth.set_state(state["g_synth"])
        return
    warnings.warn(
        f"resuming a {saved_world}-process checkpoint with {ctx.world_size} processes: augmentation and module "
        f"random streams are reseeded, so the result will not equal an uninterrupted run",
        stacklevel=3,
    )
    g_aug.manual_seed(distributed.aug_seed(seed, ctx, salt=1 + state["step"]))
    g_synth.manual_seed(distributed.synth_seed(seed, salt=1 + state["step"]))

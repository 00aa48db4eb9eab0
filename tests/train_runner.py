"""Run a tiny pretraining in its own process (so tests can kill it) and save the final state."""

import contextlib
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from finesyn.config import PretrainConfig
from finesyn.objective import Objective
from finesyn.train import RunSpec, pretrain


def tiny_spec(ckpt_dir: Path, method: str = "mocov2", synth: bool = True, **overrides) -> RunSpec:
    settings = dict(
        backbone="resnet_small",  # resnet18's layout at 1/4 width: its checkpoints are 1/16 the bytes (a write per step)
        epochs=3,
        batch_size=8,
        checkpoint_every_steps=1,
        keep_checkpoints=2,
        log_every_steps=1,
        threads=1,
        methods={
            "mocov2": {"proj_hidden_dim": 32, "proj_dim": 16, "queue_size": 32, "momentum": 0.9},
            "simsiam": {"proj_dim": 32, "pred_hidden_dim": 16},
        },
        synth={"decoder_width": 32},
    )
    cfg = PretrainConfig(**{**settings, **overrides})
    return RunSpec(method, synth, cfg, 32, 0, "tiny", ckpt_dir)


@contextlib.contextmanager
def nan_loss_at_step(step: int):
    """L_C (and so L) is NaN at `step` of a run started within the block: the fault the loop must stop
    at. Injected by patching the objective, so the training code carries no test hook."""
    real, calls = Objective.forward, [0]

    def forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if calls[0] == step:
            nan = float("nan")
            out = replace(out, total=out.total * nan, terms={**out.terms, "L_C": out.terms["L_C"] * nan})
        calls[0] += 1
        return out

    Objective.forward = forward
    try:
        yield
    finally:
        Objective.forward = real


def tiny_images(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def two_colour_images(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Class = dominant colour channel: a kNN (or linear probe) on random-init features already separates it."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    x = rng.integers(0, 80, (n, 32, 32, 3), dtype=np.uint8)
    x[labels == 0, :, :, 0] += 150
    x[labels == 1, :, :, 2] += 150
    return x, labels


def final_state(result) -> dict:
    state = {f"method.{k}": v for k, v in result.method.state_dict().items()}
    if result.synth is not None:
        state.update({f"synth.{k}": v for k, v in result.synth.state_dict().items()})
    return state


if __name__ == "__main__":
    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    if len(sys.argv) > 3:  # live curves into argv[3], as the pretrain stage writes them; a checkpoint every 4 steps
        from finesyn.live_curves import LiveCurves

        with LiveCurves(Path(sys.argv[3])) as live:
            result = pretrain(tiny_images(), tiny_spec(ckpt, checkpoint_every_steps=4), on_log=live.log, on_resume=live.restart)
    else:
        result = pretrain(tiny_images(), tiny_spec(ckpt))
    torch.save({"state": final_state(result), "history": result.history, "resumed_from": result.resumed_from}, out)

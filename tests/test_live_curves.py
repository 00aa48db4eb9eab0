"""Live training curves (finesyn.live_curves): written while a run trains, and whole after a resume."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finesyn.live_curves import LiveCurves

RUNNER = Path(__file__).with_name("train_runner.py")


def curve(live_dir: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of one dvclive metric history, in file order."""
    path = live_dir / "plots" / "metrics" / f"{name}.tsv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r[Path(name).name])) for r in csv.DictReader(f, delimiter="\t")]


def start_runner(tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(RUNNER), str(tmp / "ckpt"), str(tmp / "final.pt"), str(tmp / "live")], env=env)


def newest_checkpoint(tmp: Path) -> int:
    steps = [int(p.stem.split("_")[1]) for p in (tmp / "ckpt" / "tiny").glob("step_*.pt")]
    return max(steps, default=0)


def stop_after_an_unchecked_step(proc: subprocess.Popen, tmp: Path) -> tuple[int, int]:
    """Freeze the run (SIGSTOP) at a moment its curves hold a step its newest checkpoint does not, then
    kill it: the resumed run will log that step again. Returns (newest checkpoint, last logged step)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            logged = curve(tmp / "live", "train/L_C")
        except (TypeError, ValueError):  # a row being written while read
            continue
        if logged and logged[-1][0] >= 6:
            proc.send_signal(signal.SIGSTOP)
            ckpt, last = newest_checkpoint(tmp), curve(tmp / "live", "train/L_C")[-1][0]
            if last > ckpt:
                proc.kill()
                proc.wait(timeout=60)
                return ckpt, last
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the run ended before it could be stopped between a log step and its checkpoint")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("live_full")
    assert start_runner(tmp).wait(timeout=600) == 0
    return tmp / "live"


def test_curves_are_written_while_the_run_trains(uninterrupted):
    steps = [s for s, _ in curve(uninterrupted, "train/L_C")]
    assert steps == list(range(1, 16))  # 15 steps, logged every step
    for name in ("train/loss", "train/L_R", "train/L_Cp", "train/lr", "train/images_per_s", "train/n_selected"):
        assert [s for s, _ in curve(uninterrupted, name)] == steps, name


def test_a_resumed_run_continues_its_curves_without_duplicate_or_missing_steps(tmp_path, uninterrupted):
    ckpt, last = stop_after_an_unchecked_step(start_runner(tmp_path), tmp_path)
    assert (
        [s for s, _ in curve(tmp_path / "live", "train/L_C")][-1] == last > ckpt
    )  # killed mid-way: step `last` is logged, not checkpointed
    assert start_runner(tmp_path).wait(timeout=600) == 0
    for name in ("train/L_C", "train/loss", "train/L_R", "train/lr"):
        resumed, full = curve(tmp_path / "live", name), curve(uninterrupted, name)
        assert [s for s, _ in resumed] == list(range(1, 16)), name
        assert resumed == full, name  # the same values as the uninterrupted run (exact resume)


def test_restart_replays_a_checkpoint_in_step_order_with_the_monitor(tmp_path):
    live_dir = tmp_path / "live"
    with LiveCurves(live_dir) as live:
        for step in (5, 10, 15):  # the interrupted process got to step 15; its checkpoint holds step 10
            live.log({"step": step, "epoch": 0, "lr": 0.1, "loss": float(step), "L_C": 1.0, "images_per_s": 9.0})
    history = [{"step": s, "epoch": 0, "lr": 0.1, "loss": float(s), "L_C": 1.0, "images_per_s": 9.0} for s in (5, 10)]
    monitor = [{"step": 0, "val/knn20_top1": 10.0}, {"step": 10, "val/knn20_top1": 30.0}]
    with LiveCurves(live_dir) as live:
        live.restart(history, monitor)
        live.log({"step": 15, "epoch": 0, "lr": 0.1, "loss": 15.0, "L_C": 1.0, "images_per_s": 9.0})
    assert curve(live_dir, "train/loss") == [(5, 5.0), (10, 10.0), (15, 15.0)]
    assert curve(live_dir, "val/knn20_top1") == [(0, 10.0), (10, 30.0)]
    assert not (live_dir / "plots" / "metrics" / "train" / "epoch.tsv").exists()

"""Training curves written while pretraining runs: dvclive's live/plots/metrics/train/<term>.tsv (each loss
term, lr, images/s, n_selected) and val/<metric>.tsv (the learning monitor), one row per logged step.

Resume-safe by construction: a resumed run first rewrites its curves from the checkpoint it resumes
from (the records up to that step), then appends what it logs. Steps the interrupted process logged
after its last checkpoint are dropped and logged again by the resumed run, so every step appears once
and none is missing (dvclive's own `resume=True` would keep those steps and duplicate them).
"""

from __future__ import annotations

from pathlib import Path


def _metrics_of(rec: dict) -> dict[str, float]:
    """A pretrain() record as dvclive metric names: train/<key> for a log step, val/<metric> (already so
    named) for a learning-monitor point."""
    if "loss" not in rec:
        return {k: v for k, v in rec.items() if k != "step"}
    return {f"train/{k}": v for k, v in rec.items() if k not in ("step", "epoch")}


class LiveCurves:
    """`log` is pretrain()'s on_log and `restart` its on_resume; use as a context manager (closes dvclive)."""

    def __init__(self, live_dir: Path):
        self.live_dir = Path(live_dir)
        self._live = None

    def _open(self):
        from dvclive import Live

        if self._live is None:  # resume=False: a previous run's curves in live_dir are removed
            self._live = Live(dir=str(self.live_dir), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
        return self._live

    def log(self, rec: dict) -> None:
        """Append one record (a log step or a monitor point) at its own step."""
        live = self._open()
        live.step = rec["step"]
        for name, value in _metrics_of(rec).items():
            live.log_metric(name, value)
        live.next_step()

    def restart(self, history: list[dict], monitor: list[dict]) -> None:
        """Start the curves over from a checkpoint's records (a resumed run), in step order."""
        self.close()
        self._open()  # removes the interrupted process's curves, including its steps after the checkpoint
        for rec in sorted([*history, *monitor], key=lambda r: (r["step"], "loss" not in r)):
            self.log(rec)

    def close(self) -> None:
        if self._live is not None:
            self._live.end()
            self._live = None

    def __enter__(self) -> LiveCurves:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Reading the pipeline's own artifacts (encoder.pt, the features .npz, metrics and run records).

A missing, truncated or mismatched file is one line that names it and the command that rebuilds
it, never a traceback. Importable without torch/torchvision (the probe and retrieve stages start
faster: importing torchvision costs ~2 s per process); torch is imported only to read an encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from finesyn.errors import UserError
from finesyn.paths import RunPaths

_WRITER = {"models": "pretrain", "features": "extract", "metrics": "probe"}
FEATURE_KEYS = ("train_features", "train_labels", "test_features", "test_labels", "num_classes", "encoder_run_id")


class ArtifactError(UserError):
    """An artifact that is missing, unreadable or of another run; the message says how to rebuild it."""


def rebuild_command(path: Path) -> str:
    """The command that rewrites ``path`` (the DVC stage named after the grid cell it belongs to)."""
    found = RunPaths.of(path)
    if found is None or found[0] not in _WRITER:
        return "rerun the stage that writes it"
    kind, cell = found
    stage = _WRITER[kind] if kind != "metrics" else "probe" if Path(path).name.startswith("probe") else "retrieve"
    return f"rebuild it with `dvc repro -f -s {stage}@{cell.dataset}-{cell.experiment}-{cell.seed}`"


def read_json(path: Path) -> Any:
    """A JSON artifact (metrics, their meta records, train.json), or one line naming the file and its rebuild."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not a whole JSON file ({type(e).__name__}: {e}); {rebuild_command(path)}") from e


def load_features(path: Path) -> dict[str, np.ndarray]:
    """The extract stage's .npz: {train,test}_{features,labels,ids}, num_classes, encoder_run_id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no features (run the extract stage first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError, OSError: all mean "not a whole file"
        raise ArtifactError(f"{path}: unreadable features file ({type(e).__name__}: {e}); {rebuild_command(path)}") from e
    missing = [k for k in FEATURE_KEYS if k not in arrays]
    if missing:
        raise ArtifactError(f"{path}: not a features file of the extract stage (no {missing}); {rebuild_command(path)}")
    return arrays


def load_encoder_state(model_dir: Path) -> dict[str, Any]:
    """The dict pretrain saved as ``<model_dir>/encoder.pt`` (weights, architecture, run id)."""
    import torch

    path = Path(model_dir) / "encoder.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no encoder (run the pretrain stage first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, unpickling errors: the file is not a whole encoder
        raise ArtifactError(f"{path}: unreadable encoder ({type(e).__name__}: {e}); {rebuild_command(path)}") from e
    if not isinstance(state, dict) or "run_id" not in state or "backbone" not in state:
        raise ArtifactError(f"{path}: not an encoder written by the pretrain stage; {rebuild_command(path)}")
    return state


def check_same_run(features: Path, features_run_id: str | np.ndarray, model_dir: Path) -> None:
    """Features scored for a model must come from that model's run (a copied-over file would not)."""
    expected = str(load_encoder_state(model_dir)["run_id"])
    if str(features_run_id) != expected:
        raise ArtifactError(
            f"{features}: features of encoder run {features_run_id}, but {Path(model_dir) / 'encoder.pt'} is run {expected}; "
            f"{rebuild_command(features)}"
        )

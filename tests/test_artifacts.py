"""The pipeline's own artifacts read back (issue 17.8): features of another run are refused, a
truncated file is one line naming it and the command that rebuilds it, and the error reaches the
stage's log file as well as stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finesyn.artifacts import ArtifactError, load_encoder_state, load_features, read_json, rebuild_command
from finesyn.cli import stage_logging, user_errors
from finesyn.config import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def _encoder(root: Path, experiment: str, run_id: str) -> Path:
    d = root / "models" / "synthetic" / experiment / "seed0"
    d.mkdir(parents=True)
    torch.save({"run_id": run_id, "backbone": {}, "arch": "resnet_small"}, d / "encoder.pt")
    return d


def _features(root: Path, experiment: str, run_id: str) -> Path:
    rng = np.random.default_rng(0)
    path = root / "features" / "synthetic" / experiment / "seed0.npz"
    path.parent.mkdir(parents=True)
    labels = np.repeat(np.arange(4), 5)
    np.savez(
        path,
        train_features=rng.normal(size=(20, 8)).astype(np.float32),
        train_labels=labels,
        test_features=rng.normal(size=(20, 8)).astype(np.float32),
        test_labels=labels,
        num_classes=np.array(4),
        encoder_run_id=np.array(run_id),
        feature=np.array("backbone"),
    )
    return path


def _retrieve(tmp_path: Path, features: Path, model: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "retrieve.py"),
            "--features",
            str(features),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "retrieval.json"),
            "--params",
            str(ROOT / "params.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_features_of_another_run_are_refused(tmp_path):
    model = _encoder(tmp_path, "mocov2", "run-A")
    copied = _features(tmp_path, "mocov2", "run-B")  # e.g. copied over from another experiment
    r = _retrieve(tmp_path, copied, model)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    err = " ".join(r.stderr.split())
    assert "features of encoder run run-B" in err and "is run run-A" in err and "extract@synthetic-mocov2-0" in err
    assert not (tmp_path / "retrieval.json").exists()

    ok = _retrieve(tmp_path, _features(tmp_path, "mocov2_synth", "run-A"), model)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "retrieval.json").is_file()


def test_truncated_artifacts_name_the_file_and_the_rebuild_command(tmp_path):
    feats = _features(tmp_path, "mocov2", "run-A")
    feats.write_bytes(feats.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=r"seed0\.npz: unreadable features file .*dvc repro -f -s extract@synthetic-mocov2-0"):
        load_features(feats)
    model = _encoder(tmp_path, "simclr", "run-A")
    (model / "encoder.pt").write_bytes((model / "encoder.pt").read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"encoder\.pt: unreadable encoder .*dvc repro -f -s pretrain@synthetic-simclr-0"):
        load_encoder_state(model)


def test_a_diverged_encoder_is_refused_by_extraction_naming_the_tensor(tmp_path):
    from finesyn.eval.features import load_encoder

    model = _encoder(tmp_path, "mocov2", "run-A")
    stats = {"bn1.running_var": torch.tensor([1.0, float("inf")]), "conv.weight": torch.ones(2), "bn1.num_batches_tracked": torch.tensor(3)}
    torch.save({"run_id": "run-A", "backbone": stats, "projector": None, "arch": "resnet_small"}, model / "encoder.pt")
    with pytest.raises(ArtifactError, match=r"encoder\.pt: backbone\.bn1\.running_var hold inf/NaN .*lower pretrain\.lr"):
        load_encoder(model)


def test_a_features_file_missing_a_key_and_truncated_metrics_name_the_file_and_the_rebuild(tmp_path):
    feats = _features(tmp_path, "mocov2", "run-A")
    with np.load(feats) as z:
        np.savez(feats, **{k: z[k] for k in z.files if k != "test_labels"})
    with pytest.raises(ArtifactError, match=r"seed0\.npz: not a features file .*'test_labels'.*extract@synthetic-mocov2-0"):
        load_features(feats)
    meta = tmp_path / "metrics" / "synthetic" / "mocov2" / "seed0" / "probe.meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"l2": 0.0001, "top')
    with pytest.raises(ArtifactError, match=r"probe\.meta\.json: not a whole JSON file .*dvc repro -f -s probe@synthetic-mocov2-0"):
        read_json(meta)


def test_rebuild_command_outside_the_layout():
    assert rebuild_command(Path("/somewhere/else.npz")) == "rerun the stage that writes it"


def test_errors_reach_the_stage_log_file(tmp_path):
    log_file = tmp_path / "stage.log"
    try:
        stage_logging(log_file)
        with pytest.raises(SystemExit), user_errors():
            raise ParamsError("pretrain.batch_size (999) exceeds the 40 images")
        with pytest.raises(RuntimeError), user_errors():
            raise RuntimeError("an unexpected bug")
        text = log_file.read_text()
        assert "error: pretrain.batch_size (999) exceeds the 40 images" in text
        assert "RuntimeError: an unexpected bug" in text and "Traceback" in text
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_names_the_setting_it_came_from():
    """probe.sgd_device: cuda on a CPU machine used to blame pretrain.device."""
    from finesyn.device import DeviceUnavailableError
    from finesyn.eval.probe_sgd import sgd_probe
    from finesyn.models.backbone import Backbone

    rows, labels = np.array([0, 1]), np.array([0, 1])
    with pytest.raises(DeviceUnavailableError, match=r"^probe\.sgd_device: 'cuda' requested"):
        sgd_probe(
            Backbone("convnet"),
            np.zeros((4, 8, 8, 3), np.uint8),
            rows,
            labels,
            rows + 2,
            labels,
            num_classes=2,
            crop_size=8,
            epochs=1,
            device="cuda",
        )


def test_every_user_fixable_error_is_one_user_error_caught_once_by_the_cli(capsys):
    """One base class: the CLI needs no list of error names (a renamed class cannot drop out of it)."""
    import finesyn.data.sources as sources
    from finesyn.artifacts import ArtifactError
    from finesyn.config import ParamsError
    from finesyn.data.cache import BadImagesError, CacheError
    from finesyn.device import DeviceUnavailableError
    from finesyn.errors import UserError
    from finesyn.io import OutputLockedError, OutputWriteError
    from finesyn.train import Interrupted, NonFiniteLossError

    for cls in (
        ArtifactError,
        ParamsError,
        BadImagesError,
        CacheError,
        sources.DatasetLayoutError,
        DeviceUnavailableError,
        OutputLockedError,
        OutputWriteError,
        Interrupted,
        NonFiniteLossError,
    ):
        assert issubclass(cls, UserError), cls

    class NewError(UserError):  # defined anywhere, later: caught without touching the CLI
        pass

    with pytest.raises(SystemExit) as exit_info, user_errors():
        raise NewError("datasets.cub200.root: no such folder")
    assert exit_info.value.code == 2 and "datasets.cub200.root: no such folder" in capsys.readouterr().err

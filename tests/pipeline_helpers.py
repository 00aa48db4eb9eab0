"""Copy the project into a temporary git repo with a tiny params.yaml, to run the real tools on it."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool_env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore"}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def tiny_params(raw: dict) -> dict:
    raw["grid"] = {"datasets": ["synthetic"], "experiments": ["random_init", "mocov2_synth"], "seeds": [0]}
    raw["datasets"]["synthetic"].update(num_classes=4, train_per_class=12, test_per_class=6, image_size=32, crop_size=32)
    raw["pretrain"].update(epochs=1, batch_size=16, threads=1, checkpoint_every_steps=1)
    raw["pretrain"]["methods"]["mocov2"].update(proj_hidden_dim=32, proj_dim=16)
    raw["pretrain"]["synth"]["decoder_width"] = 32
    raw["probe"].update(l2_grid=[1e-4, 1e-2], max_iter=50)
    raw["retrieve"]["knn_ks"] = [5]
    return raw


def make_project(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if f.startswith(("metrics/", "reports/", "dvc.lock")) or not (ROOT / f).is_file():
            continue  # results of the real run are not part of a fresh project
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(raw), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


@contextlib.contextmanager
def edited_params(project: Path, edit):
    """params.yaml with `edit(raw)` applied for the duration of the block, then restored."""
    params = project / "params.yaml"
    original = params.read_text()
    raw = yaml.safe_load(original)
    edit(raw)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        yield
    finally:
        params.write_text(original)

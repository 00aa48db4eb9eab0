"""What a user sees for each fault and bad input of the reliability review: every case is made to happen
(real stage commands for params, library calls for files) and its message is written down as printed.

    python tools/fault_messages.py > docs/fault-messages.md

Needs the project's venv (tests/ helpers build the fixture files). Takes about two minutes on 2 cores (one case runs `dvc repro` on a tiny copy of the project).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def validate_with(edit: Callable[[dict], None], tmp: Path) -> str:
    """The `validate` stage on params.yaml with `edit` applied: its error line(s)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "COLUMNS": "400", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages/validate.py"), "--params", str(params), "--out", str(tmp / "resolved.json")],
        capture_output=True, text=True, env=env, cwd=tmp,
    )  # fmt: skip
    return (r.stdout + r.stderr).strip() or f"(exit {r.returncode}, no output)"


def raised(fn: Callable[[], object]) -> str:
    """`error: <message>` as the stages print a user error, or the warnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the message is what is recorded
            return f"error: {e}"
    return "\n".join(f"warning: {w.message}" for w in caught) or "(no message)"


def logged(fn: Callable[[], object]) -> str:
    """The warnings `fn` logs (the stages' log lines)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue().strip() or "(nothing logged)"


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return edit


def cases(tmp: Path) -> list[tuple[str, str, Callable[[], str]]]:
    from fixtures import make_imagefolder_tree, write_garbage, write_png16
    from train_runner import tiny_spec

    from finesyn.artifacts import read_json
    from finesyn.checkpoints import save_checkpoint
    from finesyn.config import DatasetConfig
    from finesyn.data.prepare import prepare_dataset
    from finesyn.data.sources import index_dataset
    from finesyn.eval.monitor import carve_validation
    from finesyn.io import atomic_write_json

    def pruning() -> str:
        import torch

        run_dir = tmp / "ckpt" / "mine"
        run_dir.mkdir(parents=True)
        torch.save({"run_id": "theirs", "step": 900}, run_dir / "step_00000900.pt")
        (run_dir / "step_00000950.pt").write_bytes(b"not a checkpoint")
        from dataclasses import replace

        spec = replace(tiny_spec(tmp / "ckpt"), run_id="mine")
        return raised(lambda: [save_checkpoint(spec, {"step": s}, keep=2) for s in (1, 2, 3)])

    def diverged() -> str:
        from test_train import _coloured_images

        from finesyn.train import pretrain

        imgs, labels = _coloured_images()
        spec = tiny_spec(tmp / "div", method="supervised", synth=False, epochs=4, optimizer="sgd", lr=30.0)
        return raised(lambda: pretrain(imgs, spec, np.arange(48), labels=labels, num_classes=3))

    def png16() -> str:
        from finesyn.data.cache import load_image

        path = write_png16(tmp / "sixteen.png", np.full((8, 8, 3), 200, np.uint16))
        return f"(no message: decoded right) a 16-bit PNG whose values are 200: decoded values {sorted(set(load_image(path, 8).ravel().tolist()))}"

    def blank_image() -> str:
        tree = make_imagefolder_tree(tmp / "blank")
        from PIL import Image

        Image.new("RGB", (40, 30), (0, 0, 0)).save(tree.root / "train" / "alpha" / "black.png")
        cfg = DatasetConfig(kind="imagefolder", root=tree.root, image_size=16, crop_size=16, workers=1)
        return logged(lambda: prepare_dataset("own", cfg, tmp / "blank_out"))

    def bad_image(on_bad_image: str) -> Callable[[], str]:
        def run() -> str:
            tree = make_imagefolder_tree(tmp / f"bad_{on_bad_image}")
            write_garbage(tree.root / "train" / "alpha" / "broken.jpg")
            cfg = DatasetConfig(kind="imagefolder", root=tree.root, image_size=16, crop_size=16, workers=1, on_bad_image=on_bad_image)
            out = tmp / f"bad_{on_bad_image}_out"
            if on_bad_image == "fail":
                return raised(lambda: prepare_dataset("own", cfg, out))
            return logged(lambda: prepare_dataset("own", cfg, out))

        return run

    def dangling() -> str:
        tree = make_imagefolder_tree(tmp / "dangling")
        (tree.root / "train" / "alpha" / "gone.jpg").symlink_to(tmp / "nowhere.jpg")
        return raised(lambda: index_dataset("imagefolder", tree.root))

    def one_image_class() -> str:
        labels = np.array([0, 0, 0, 1, 2, 2])
        return raised(lambda: carve_validation(np.arange(6), labels, 0.1, 0, ["sparrow", "wren", "finch"]))

    def features_missing_key() -> str:
        from finesyn.artifacts import load_features

        path = tmp / "features" / "synthetic" / "mocov2" / "seed0.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, train_features=np.zeros((2, 3), np.float32))
        return raised(lambda: load_features(path))

    def truncated_metrics() -> str:
        path = tmp / "metrics" / "synthetic" / "mocov2" / "seed0" / "probe.meta.json"
        path.parent.mkdir(parents=True)
        path.write_text('{"l2": 0.0001, "top')
        return raised(lambda: read_json(path))

    def nan_metadata() -> str:
        return raised(lambda: atomic_write_json(tmp / "m.json", {"l2": float("nan")}))

    def sgd_probe_on_cuda() -> str:
        from finesyn.device import select_device

        return raised(lambda: select_device("cuda", key="probe.sgd_device"))  # what sgd_probe does first

    def dvc_killed_alone() -> str:
        """`kill <dvc pid>` during pretrain: the stage runs on (an orphan); a new `dvc repro` meets it."""
        import signal
        import time

        from pipeline_helpers import make_project, tool_env

        proj = make_project(tmp / "proj")
        raw = yaml.safe_load((proj / "params.yaml").read_text())
        raw["pretrain"]["epochs"] = 50  # long enough to still run when the second repro reaches it
        (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        first = subprocess.Popen(["dvc", "repro"], cwd=proj, env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpts, deadline = proj / "checkpoints" / "synthetic" / "mocov2_synth", time.monotonic() + 600
        while not any(ckpts.rglob("step_*.pt")) and time.monotonic() < deadline:
            time.sleep(0.5)
        os.kill(first.pid, signal.SIGKILL)  # the dvc process alone, not its stage
        first.wait()
        second = subprocess.run(["dvc", "repro"], cwd=proj, env=tool_env(), capture_output=True, text=True)
        for pid in subprocess.run(["pgrep", "-f", "stages/pretrain.py"], capture_output=True, text=True).stdout.split():
            with contextlib.suppress(OSError):  # the orphan: the pretrain process whose folder is this project
                if Path(f"/proc/{pid}/cwd").resolve() == proj.resolve():
                    os.kill(int(pid), signal.SIGKILL)
        lines = (second.stdout + second.stderr).splitlines()
        return "\n".join(line for line in lines if line.startswith(("error:", "ERROR:"))) or "(no error)"

    garbage_init = tmp / "init.pth"
    garbage_init.write_bytes(b"not a state dict")
    v = lambda edit: lambda: validate_with(edit, tmp)  # noqa: E731
    return [
        ("1", "another run's checkpoint and an unreadable one in the run's folder, then a checkpoint", pruning),
        ("2", "supervised, `optimizer: sgd`, `lr: 30` (diverges)", diverged),
        ("3", "a 16-bit PNG holding 8-bit values", png16),
        ("3", "a blank image in the dataset (prepare)", blank_image),
        ("4", "`probe.l2_grid: []`", v(_set("probe.l2_grid", []))),
        ("4", "`probe.l2_grid: [-1]`", v(_set("probe.l2_grid", [-1.0]))),
        ("4", "`probe.l2_grid: [.nan]`", v(_set("probe.l2_grid", [float("nan")]))),
        ("4", "`retrieve.ks: [0]`", v(_set("retrieve.ks", [0]))),
        ("4", "`retrieve.knn_ks: [0]`", v(_set("retrieve.knn_ks", [0]))),
        ("4", "`pretrain.augment.crop_ratio: [-1, 1]`", v(_set("pretrain.augment.crop_ratio", [-1.0, 1.0]))),
        ("4", "`pretrain.augment.color_jitter: [-0.4, 0.4, 0.4, 0.1]`", v(_set("pretrain.augment.color_jitter", [-0.4, 0.4, 0.4, 0.1]))),
        ("4", "`datasets.synthetic.object_scale: [-0.2, 0.3]`", v(_set("datasets.synthetic.object_scale", [-0.2, 0.3]))),
        ("4", "`pretrain.init:` a file that is not a state dict", v(_set("pretrain.init", str(garbage_init)))),
        ("4", "a NaN reaching a metadata file", nan_metadata),
        ("5", "a class with one train image (pretrain's monitor split)", one_image_class),
        ("5", "a features .npz missing a key", features_missing_key),
        ("5", "a truncated metrics JSON read by the report", truncated_metrics),
        ("6", "`on_bad_image: skip` with an unreadable image", bad_image("skip")),
        ("6", "`on_bad_image: fail` (the default) with an unreadable image", bad_image("fail")),
        ("6", "a dangling image link in an imagefolder", dangling),
        ("6", "`probe.protocol: sgd_paper`, `probe.sgd_device: cuda` on a machine without CUDA (the probe stage)", sgd_probe_on_cuda),
        ("6", "`pretrain.init:` a file that does not exist", v(_set("pretrain.init", str(tmp / "missing.pth")))),
        ("6", "`kill` of the `dvc` process alone during pretrain, then `dvc repro` again", dvc_killed_alone),
    ]


def main() -> int:
    print("# What a fault or a bad input prints\n")
    print("Made by `python tools/fault_messages.py > docs/fault-messages.md`: each case is made to happen and its")
    print("message written down as printed (paths are those of a temporary folder). The numbers are the items of")
    print("the reliability review's list. The behaviours are tested in tests/; this file shows the messages whole:")
    print("rerun the script after changing one.\n")
    with tempfile.TemporaryDirectory() as d:
        for i, (item, what, fn) in enumerate(cases(Path(d))):
            tmp = Path(d) / f"case{i}"
            tmp.mkdir()
            text = fn().replace(d, "<tmp>")
            print(f"## {item}. {what}\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

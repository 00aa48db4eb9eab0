"""A method is one file plus one registry line: a toy method added that way trains through the loop."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOY = '''"""Toy method of the registry test: negative cosine of the two views' projections."""

import torch.nn.functional as F

from finesyn.methods.base import SSLMethod, SSLOutput, register
from finesyn.models.heads import mlp


@register("toy")
class Toy(SSLMethod):
    def __init__(self, backbone):
        super().__init__(backbone)
        self.projector_spec = {"dims": [backbone.dim, 16]}
        self.projector = mlp(**self.projector_spec)

    @classmethod
    def from_config(cls, backbone, cfg, num_train, num_classes=None):
        return cls(backbone)

    def ssl_loss(self, x1, x2, update_state=True):
        h1 = self.backbone(x1)
        loss = -F.cosine_similarity(self.projector(h1), self.projector(self.backbone(x2)), dim=1).mean()
        return SSLOutput(loss, h1)
'''

CHECK = """
import typing
import numpy as np
from finesyn.config import ExperimentConfig, MethodsConfig, PretrainConfig
from finesyn.methods import METHODS
from finesyn.train import RunSpec, pretrain

names = set(typing.get_args(ExperimentConfig.model_fields["method"].annotation)) - {"none"}
assert names == set(METHODS) == set(MethodsConfig.model_fields), (names, set(METHODS))
assert "toy" in names
cfg = PretrainConfig(backbone="resnet_small", epochs=1, batch_size=8, threads=1, monitor_every_steps=0)
imgs = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
r = pretrain(imgs, RunSpec("toy", True, cfg, 32, 0, "toy", __import__("pathlib").Path("ckpt")))
assert r.steps == 2 and np.isfinite(r.history[-1]["L_Cp"]), r.history[-1]
print("ok")
"""


def test_a_toy_method_is_one_new_file_and_one_registry_line(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "finesyn", src / "finesyn", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "finesyn" / "methods" / "toy.py").write_text(TOY)  # the new file
    config = src / "finesyn" / "config.py"
    text = config.read_text()
    anchor = '    "simclr": SimCLRConfig,\n'
    assert anchor in text
    config.write_text(text.replace(anchor, anchor + '    "toy": Section,  # no settings\n'))  # the one line
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]

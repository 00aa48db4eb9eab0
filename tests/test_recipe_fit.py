"""validate warns when a dataset's crop size does not suit the recipe that trains on it (both presets run on the
other's data without an error and learn little)."""

from pathlib import Path

import yaml

from finesyn.config import parse_params
from finesyn.recipe_fit import recipe_warnings

ROOT = Path(__file__).resolve().parents[1]


def _raw(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_each_preset_on_its_own_crop_size_is_quiet():
    assert recipe_warnings(parse_params(_raw("params.yaml"))) == []
    assert recipe_warnings(parse_params(_raw("params/paper.yaml"))) == []


def test_the_default_recipe_on_224_px_crops_names_its_settings_and_the_preset():
    raw = _raw("params.yaml")
    raw["grid"]["datasets"] = ["synthetic", "cub200"]
    (line,) = recipe_warnings(parse_params(raw))
    assert line.startswith("datasets.cub200.crop_size is 224 px, but supervised, mocov2, mocov2_synth train with")
    assert "backbone: convnet" in line and "blur_sigma: [0.1, 0.6]" in line and "params/paper.yaml" in line


def test_the_paper_recipe_on_64_px_crops_names_its_blur():
    raw = _raw("params/paper.yaml")
    raw["datasets"]["cub200"].update(image_size=72, crop_size=64)
    (line,) = recipe_warnings(parse_params(raw))
    assert line.startswith("datasets.cub200.crop_size is 64 px") and "blur_sigma: [0.1, 2.0]" in line

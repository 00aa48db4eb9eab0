"""Unlabelled images (`datasets.<d>.unlabelled_root`): cached beside the labelled ones with split 'unlabelled'
and label -1, pretrained on by the label-free methods only, and never seen by the supervised reference, the
probe or retrieval; the labelled rows stay what they were without them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures import make_imagefolder_tree, write_image
from pipeline_helpers import tiny_params

from finesyn.config import DatasetConfig, ParamsError, parse_params
from finesyn.data.layout import check_dataset_root
from finesyn.data.prepare import prepare_dataset
from finesyn.data.prepared import open_cache
from finesyn.data.raw_manifest import raw_manifest
from finesyn.data.sources import DatasetLayoutError, index_unlabelled

ROOT = Path(__file__).resolve().parents[1]


def _unlabelled_folder(root: Path, n: int = 5) -> Path:
    for i in range(n):  # nested at any depth; hidden files and other files are not images
        write_image(root / ("a" if i % 2 else "b/c") / f"u{i}.jpg", seed=100 + i)
    (root / "notes.txt").write_text("not an image")
    write_image(root / ".hidden" / "h.png", seed=7)
    return root


def test_every_image_under_the_folder_in_order_and_an_empty_folder_is_named(tmp_path):
    items = index_unlabelled(_unlabelled_folder(tmp_path / "u"))
    assert [it.id for it in items] == ["unlabelled/a/u1.jpg", "unlabelled/a/u3.jpg"] + [f"unlabelled/b/c/u{i}.jpg" for i in (0, 2, 4)]
    assert {(it.label, it.split) for it in items} == {(-1, "unlabelled")}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"no image files under the unlabelled image folder .*empty"):
        index_unlabelled(tmp_path / "empty")


def test_the_cache_holds_them_after_the_labelled_rows_which_are_unchanged(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    plain = DatasetConfig(kind="imagefolder", root=tree.root, image_size=16, crop_size=16, workers=1)
    with_u = plain.model_copy(update={"unlabelled_root": _unlabelled_folder(tmp_path / "u")})
    a = prepare_dataset("own", plain, tmp_path / "plain")
    b = prepare_dataset("own", with_u, tmp_path / "with_u")
    n = len(a)
    assert a.meta["counts"] == {"train": 6, "test": 3}  # a cache without unlabelled images reads as before
    assert b.meta["counts"] == {"train": 6, "test": 3, "unlabelled": 5}
    b = open_cache(tmp_path / "with_u")
    assert np.array_equal(b.images[:n], a.images) and b.ids[:n] == a.ids and np.array_equal(b.labels[:n], a.labels)
    assert list(b.indices("unlabelled")) == list(range(n, n + 5)) and set(b.labels[n:]) == {-1}
    assert list(b.indices("train")) == list(a.indices("train")) and list(b.indices("test")) == list(a.indices("test"))


def test_label_free_methods_pretrain_on_them_and_the_supervised_reference_does_not(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    cfg = DatasetConfig(
        kind="imagefolder", root=tree.root, image_size=16, crop_size=16, workers=1, unlabelled_root=_unlabelled_folder(tmp_path / "u")
    )
    ds = prepare_dataset("own", cfg, tmp_path / "out")
    fit = ds.indices("train")[:4]
    assert list(ds.pretraining_indices(fit, uses_labels=True)) == list(fit)
    assert list(ds.pretraining_indices(fit, uses_labels=False)) == list(fit) + list(ds.indices("unlabelled"))


def test_the_key_is_checked_before_any_work(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"]["synthetic"]["unlabelled_root"] = "somewhere"
    with pytest.raises(ParamsError, match=r"'unlabelled_root' is not read for kind 'synthetic'"):
        parse_params(raw)
    del raw["datasets"]["synthetic"]["unlabelled_root"]
    tree = make_imagefolder_tree(tmp_path)
    raw["datasets"]["own"] = {"kind": "imagefolder", "root": str(tree.root), "unlabelled_root": str(tmp_path / "nope")}
    with pytest.raises(ParamsError, match=r"datasets\.own\.unlabelled_root: .*missing unlabelled image folder: .*nope"):
        check_dataset_root(parse_params(raw), "own")


def test_an_unlabelled_image_added_changes_the_raw_manifest(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    cfg = DatasetConfig(kind="imagefolder", root=tree.root, unlabelled_root=_unlabelled_folder(tmp_path / "u"))
    before = raw_manifest("own", cfg)
    assert "unlabelled_root/a/u1.jpg\t" in before
    write_image(tmp_path / "u" / "new.png", seed=3)
    assert "unlabelled_root/new.png\t" in raw_manifest("own", cfg)


@pytest.mark.parametrize(("experiment", "unlabelled"), [("mocov2", 12), ("supervised", 0)])
def test_the_pretrain_stage_records_what_it_pretrained_on(tmp_path, experiment, unlabelled):
    tree = make_imagefolder_tree(tmp_path, per_class=8)  # 7 train + 1 test images per class
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["datasets"]["own"] = {
        "kind": "imagefolder", "root": str(tree.root), "unlabelled_root": str(_unlabelled_folder(tmp_path / "u", 12)),
        "image_size": 32, "crop_size": 32, "workers": 1,
    }  # fmt: skip
    raw["pretrain"].update(batch_size=8, monitor_val_fraction=0.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = ["--params", "params.yaml", "--dataset", "own"]
    for stage, more in (
        ("prepare", ["--out", "data"]),
        ("pretrain", ["--experiment", experiment, "--data", "data", "--out", "m", "--checkpoints", "c"]),
    ):
        r = subprocess.run(
            [sys.executable, str(ROOT / f"stages/{stage}.py"), *args, *more], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    record = json.loads((tmp_path / "m/train.json").read_text())
    assert (record["train_images"], record["unlabelled_images"]) == (21 + unlabelled, unlabelled)


def test_without_unlabelled_images_the_cache_records_what_it_did_before(tmp_path):
    """The prepared meta is part of every run's identity: a key added unset must not retrain every run."""
    tree = make_imagefolder_tree(tmp_path)
    ds = prepare_dataset("own", DatasetConfig(kind="imagefolder", root=tree.root, image_size=16, crop_size=16, workers=1), tmp_path / "o")
    assert "unlabelled_root" not in ds.meta["params"]

"""studies/digits_photos.py, the builder of the real-material imagefolder dataset (sklearn's handwritten digits on
its two sample photos), at a small size: no source digit in both splits, a rebuild is byte-identical (another seed
is not), the tree is what the `imagefolder` source indexes, and an existing tree is only replaced with --force.
Run as a subprocess: tests do not import studies (tests/test_layout_imports.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finesyn.data.sources import index_dataset

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--per-class", "3", "--train-renders", "1", "--test-renders", "2"]  # 20 train, 20 test images
NAME = re.compile(r"d(\d{5})_r(\d+)\.png")


def build(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "studies.digits_photos", "--out", str(out), *SMALL, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def source_of(png: Path) -> int:
    """The source digit index in a file name dNNNNN_rR.png."""
    m = NAME.fullmatch(png.name)
    assert m, png
    return int(m[1])


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp") / "digits_photos"
    r = build(out, "--grid", str(out.parent / "grid.png"))
    assert r.returncode == 0, r.stderr
    return out


def test_no_source_digit_is_in_both_splits_and_folders_are_its_label(tree):
    from sklearn.datasets import load_digits

    target = load_digits().target
    sources: dict[str, set[int]] = {}
    for split in ("train", "test"):
        pngs = list((tree / split).rglob("*.png"))
        assert pngs
        sources[split] = {source_of(p) for p in pngs}
        assert all(int(p.parent.name) == target[source_of(p)] for p in pngs)
    assert not sources["train"] & sources["test"]
    assert (len(sources["train"]), len(sources["test"])) == (20, 10)  # 2 + 1 of each class's digits


def test_a_rebuild_is_byte_identical_and_another_seed_differs(tree, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    assert build(again).returncode == 0 and build(other, "--seed", "1").returncode == 0
    sha = {p: json.loads((p / "build.json").read_text())["images_sha256"] for p in (tree, again, other)}
    images = {p: {k: v for k, v in files(p).items() if k.endswith(".png")} for p in (tree, again, other)}
    assert images[again] == images[tree] and sha[again] == sha[tree]
    assert images[other].keys() == images[tree].keys()
    assert sha[other] != sha[tree] and all(images[other][k] != images[tree][k] for k in images[tree])


def test_the_imagefolder_source_indexes_it(tree):
    info = json.loads((tree / "build.json").read_text())
    for split in ("train", "test"):
        assert sorted(p.name for p in (tree / split).iterdir()) == [str(c) for c in range(10)]
    index = index_dataset("imagefolder", tree, strict=True)
    assert index.classes == [str(c) for c in range(10)]
    assert index.counts() == {"classes": 10, "train": 20, "test": 20} == {"classes": 10, **info["images"]}
    with Image.open(index.items[0].path) as im:
        assert (im.size, im.mode) == ((64, 64), "RGB")
    assert "CC BY 4.0" in (tree / "README.txt").read_text()


def test_an_existing_tree_is_replaced_only_with_force(tree, tmp_path):
    out = tmp_path / "digits_photos"
    shutil.copytree(tree, out)
    (out / "mine.txt").write_text("keep me")
    before = files(out)
    r = build(out, "--seed", "1")
    assert r.returncode == 2 and str(out) in r.stderr and "--force" in r.stderr
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_photos"]  # no temporary folder left behind
    r = build(out, "--seed", "1", "--force")
    assert r.returncode == 0, r.stderr
    after = files(out)
    assert "mine.txt" not in after and after["build.json"] != before["build.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_photos"]


def test_the_grid_has_one_row_per_class(tree):
    grid = np.asarray(Image.open(tree.parent / "grid.png"))
    assert grid.shape == (10 * 64 * 3, 8 * 64 * 3, 3)
    first = np.asarray(Image.open(sorted((tree / "train" / "0").glob("*.png"))[0]))
    assert (grid[:192:3, :192:3] == first).all()  # row 0 starts with class 0's first train image

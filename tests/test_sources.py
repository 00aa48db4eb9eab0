"""Dataset indexers on tiny fixture trees in the official layouts."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures import (
    make_aircraft_tree,
    make_cars_tree,
    make_cub_tree,
    make_imagefolder_tree,
    write_cars_annotations,
    write_image,
)

from finesyn.data.sources import (
    SOURCES,
    DatasetCountWarning,
    DatasetIndex,
    DatasetLayoutError,
    index_dataset,
)


def _index(kind: str, root: Path, **kw) -> DatasetIndex:
    """Index a fixture tree; tiny trees always differ from the official counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetCountWarning)
        return index_dataset(kind, root, **kw)


def _assert_matches(index: DatasetIndex, tree) -> None:
    assert index.classes == tree.classes
    got = [(it.path, it.label, it.split, it.id) for it in index.items]
    exp = [(it.path, it.label, it.split, it.id) for it in tree.items]
    assert got == exp


def test_registry_and_unknown_kind(tmp_path):
    assert set(SOURCES) == {"cub200", "stanford_cars", "fgvc_aircraft", "imagefolder"}
    with pytest.raises(ValueError, match="unknown dataset kind 'cars'"):
        index_dataset("cars", tmp_path)


# --------------------------------------------------------------------------- CUB


def test_cub_loads(tmp_path):
    tree = make_cub_tree(tmp_path, n_classes=3, n_train=2, n_test=1)
    with pytest.warns(DatasetCountWarning, match="official counts"):
        index = index_dataset("cub200", tree.root)
    _assert_matches(index, tree)
    assert index.counts() == {"classes": 3, "train": 6, "test": 3}
    assert index.expected_counts == {"classes": 200, "train": 5994, "test": 5794}
    assert index.kind == "cub200" and index.root == tree.root
    assert [it.label for it in index.items][:3] == [0, 0, 0]  # 1-based files -> 0-based labels
    # the parent of CUB_200_2011/ is accepted too
    _assert_matches(_index("cub200", tmp_path), tree)


def test_cub_strict_counts(tmp_path):
    tree = make_cub_tree(tmp_path)
    with pytest.raises(DatasetLayoutError, match="official counts"):
        index_dataset("cub200", tree.root, strict=True)
    # matching expected counts -> no warning
    index = _index("cub200", tree.root)
    assert index.counts()["train"] == 6


@pytest.mark.parametrize("missing", ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"])
def test_cub_missing_file(tmp_path, missing):
    tree = make_cub_tree(tmp_path)
    target = tree.root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetLayoutError) as ei:
        index_dataset("cub200", tree.root)
    msg = str(ei.value)
    assert str(target) in msg and "Expected layout" in msg and "train_test_split.txt" in msg
    assert "caltech.edu" in msg


def test_cub_missing_image_and_inconsistent_files(tmp_path):
    tree = make_cub_tree(tmp_path)
    tree.items[4].path.unlink()
    with pytest.raises(DatasetLayoutError, match="missing") as ei:
        index_dataset("cub200", tree.root)
    assert str(tree.items[4].path) in str(ei.value)
    _index("cub200", tree.root, check_files=False)  # indexing alone can skip the stat

    tree = make_cub_tree(tmp_path / "b")
    lines = (tree.root / "train_test_split.txt").read_text().splitlines()
    (tree.root / "train_test_split.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetLayoutError, match="train_test_split.txt does not match images.txt"):
        index_dataset("cub200", tree.root)


def test_cub_empty_class(tmp_path):
    tree = make_cub_tree(tmp_path, n_classes=3)
    with open(tree.root / "classes.txt", "a") as f:
        f.write("4 004.Bird_Empty\n")
    with pytest.raises(DatasetLayoutError, match="004.Bird_Empty"):
        index_dataset("cub200", tree.root)


@pytest.mark.filterwarnings("ignore:.*official counts:finesyn.data.sources.DatasetCountWarning")
def test_cub_class_missing_from_a_split_warns(tmp_path):
    tree = make_cub_tree(tmp_path, n_classes=2, n_train=1, n_test=1)
    # move class 2's test image to train
    p = tree.root / "train_test_split.txt"
    p.write_text(p.read_text().replace("4 0", "4 1"))
    with pytest.warns(DatasetCountWarning, match="no test images"):
        index_dataset("cub200", tree.root)


# --------------------------------------------------------------------------- Stanford Cars


def test_cars_loads(tmp_path):
    tree = make_cars_tree(tmp_path, n_classes=3, n_train=2, n_test=2)
    with pytest.warns(DatasetCountWarning):
        index = index_dataset("stanford_cars", tree.root)
    _assert_matches(index, tree)
    assert index.expected_counts == {"classes": 196, "train": 8144, "test": 8041}
    assert len({it.id for it in index.items}) == len(index.items)  # train/test fnames overlap
    _assert_matches(_index("stanford_cars", tmp_path), tree)


def test_cars_agrees_with_torchvision(tmp_path):
    tv = pytest.importorskip("torchvision.datasets")
    tree = make_cars_tree(tmp_path)
    index = _index("stanford_cars", tree.root)
    for split in ("train", "test"):
        ds = tv.StanfordCars(str(tmp_path), split=split)
        assert ds.classes == index.classes
        assert [(Path(p), t) for p, t in ds._samples] == [(it.path, it.label) for it in index.split(split)]


@pytest.mark.parametrize(
    "missing", ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat", "cars_train", "cars_test"]
)
def test_cars_missing_file(tmp_path, missing):
    tree = make_cars_tree(tmp_path)
    target = tree.root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetLayoutError) as ei:
        index_dataset("stanford_cars", tree.root)
    msg = str(ei.value)
    assert str(target) in msg and "cars_test_annos_withlabels.mat" in msg and "jkrause" in msg


def test_cars_unlabeled_test_annotations(tmp_path):
    tree = make_cars_tree(tmp_path)
    write_cars_annotations(
        tree.root / "cars_test_annos_withlabels.mat", [(it.path.name, 1) for it in tree.items if it.split == "test"], with_class=False
    )
    with pytest.raises(DatasetLayoutError, match="no 'class' field.*withlabels"):
        index_dataset("stanford_cars", tree.root)


def test_cars_bad_label_and_corrupt_mat(tmp_path):
    tree = make_cars_tree(tmp_path, n_classes=3)
    write_cars_annotations(tree.root / "devkit" / "cars_train_annos.mat", [("00001.jpg", 7)])
    with pytest.raises(DatasetLayoutError, match=r"class 7 is not in 1\.\.3"):
        index_dataset("stanford_cars", tree.root)
    (tree.root / "devkit" / "cars_meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetLayoutError, match="cannot read MATLAB file .*cars_meta.mat"):
        index_dataset("stanford_cars", tree.root)


def test_cars_empty_class(tmp_path):
    tree = make_cars_tree(tmp_path, n_classes=3)
    from scipy.io import savemat

    savemat(
        tree.root / "devkit" / "cars_meta.mat", {"class_names": np.array(tree.classes + ["Unused Car 1999"], dtype=object).reshape(1, -1)}
    )
    with pytest.raises(DatasetLayoutError, match="Unused Car 1999"):
        index_dataset("stanford_cars", tree.root)


# --------------------------------------------------------------------------- FGVC-Aircraft


def test_aircraft_loads_variant_level(tmp_path):
    tree = make_aircraft_tree(tmp_path, n_classes=4, n_trainval=2, n_test=1)
    with pytest.warns(DatasetCountWarning):
        index = index_dataset("fgvc_aircraft", tree.root)
    _assert_matches(index, tree)
    assert "F/A-18" in index.classes and "Boeing 717" in index.classes
    assert index.counts() == {"classes": 4, "train": 8, "test": 4}
    assert index.expected_counts == {"classes": 100, "train": 6667, "test": 3333}
    _assert_matches(_index("fgvc_aircraft", tmp_path), tree)


def test_aircraft_agrees_with_torchvision(tmp_path):
    tv = pytest.importorskip("torchvision.datasets")
    tree = make_aircraft_tree(tmp_path, n_classes=4)
    index = _index("fgvc_aircraft", tree.root)
    for split, tv_split in (("train", "trainval"), ("test", "test")):
        ds = tv.FGVCAircraft(str(tmp_path), split=tv_split, annotation_level="variant")
        assert ds.classes == index.classes
        assert [(Path(p), t) for p, t in zip(ds._image_files, ds._labels)] == [(it.path, it.label) for it in index.split(split)]


@pytest.mark.parametrize(
    "missing", ["data/variants.txt", "data/images_variant_trainval.txt", "data/images_variant_test.txt", "data/images"]
)
def test_aircraft_missing_file(tmp_path, missing):
    tree = make_aircraft_tree(tmp_path)
    target = tree.root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetLayoutError) as ei:
        index_dataset("fgvc_aircraft", tree.root)
    assert str(target) in str(ei.value) and "fgvc-aircraft-2013b.tar.gz" in str(ei.value)


def test_aircraft_unknown_variant_and_empty_class(tmp_path):
    tree = make_aircraft_tree(tmp_path, n_classes=3)
    p = tree.root / "data" / "images_variant_test.txt"
    p.write_text(p.read_text() + "1234567 Concorde\n")
    with pytest.raises(DatasetLayoutError, match=r"images_variant_test.txt:4: variant 'Concorde'"):
        index_dataset("fgvc_aircraft", tree.root)

    tree = make_aircraft_tree(tmp_path / "b", n_classes=3)
    with open(tree.root / "data" / "variants.txt", "a") as f:
        f.write("Concorde\n")
    with pytest.raises(DatasetLayoutError, match="Concorde"):
        index_dataset("fgvc_aircraft", tree.root)


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_presplit(tmp_path):
    tree = make_imagefolder_tree(tmp_path, per_class=3, n_test=1)
    (tree.root / "train" / "alpha" / "notes.txt").write_text("ignored")
    (tree.root / "train" / ".hidden").mkdir()
    index = index_dataset("imagefolder", tree.root)
    _assert_matches(index, tree)
    assert index.expected_counts is None and index.name == "ds"
    assert index.counts() == {"classes": 3, "train": 6, "test": 3}


def _single(tmp_path, per_class=10, **kw):
    tree = make_imagefolder_tree(tmp_path, per_class=per_class, presplit=False)
    return tree, index_dataset("imagefolder", tree.root, **kw)


def test_imagefolder_says_how_many_image_links_are_dangling(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    link = tree.root / "train" / "alpha" / "moved.jpg"
    link.symlink_to(tmp_path / "elsewhere" / "moved.jpg")
    with pytest.warns(UserWarning, match=r"1 image link\(s\) in .*alpha point to missing files and are not indexed, e\.g\. .*moved\.jpg"):
        index = index_dataset("imagefolder", tree.root)
    assert len(index.items) == len(tree.items)


def test_imagefolder_single_split_is_stratified_and_deterministic(tmp_path):
    tree, a = _single(tmp_path, split_ratio=0.7, split_seed=3)
    assert a.classes == tree.classes
    assert [(it.path, it.label, it.id) for it in a.items] == [(it.path, it.label, it.id) for it in tree.items]
    for c in range(3):
        splits = [it.split for it in a.items if it.label == c]
        assert splits.count("train") == 7 and splits.count("test") == 3
    b = index_dataset("imagefolder", tree.root, split_ratio=0.7, split_seed=3)
    assert [it.split for it in a.items] == [it.split for it in b.items]
    c = index_dataset("imagefolder", tree.root, split_ratio=0.7, split_seed=4)
    assert [it.split for it in a.items] != [it.split for it in c.items]
    # a class's split does not depend on which other classes exist
    shutil.rmtree(tree.root / "alpha")
    d = index_dataset("imagefolder", tree.root, split_ratio=0.7, split_seed=3)
    assert [it.split for it in a.items if it.label == 2] == [it.split for it in d.items if it.label == 1]


def test_imagefolder_single_needs_ratio_and_small_classes(tmp_path):
    tree = make_imagefolder_tree(tmp_path, per_class=2, presplit=False)
    with pytest.raises(DatasetLayoutError, match="split_ratio"):
        index_dataset("imagefolder", tree.root)
    with pytest.raises(ValueError, match="split_ratio"):
        index_dataset("imagefolder", tree.root, split_ratio=1.0)
    index = index_dataset("imagefolder", tree.root, split_ratio=0.9)
    for c in range(3):  # at least one image per split when a class has >= 2 images
        assert sorted(it.split for it in index.items if it.label == c) == ["test", "train"]


def test_imagefolder_empty_class_and_half_split(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    empty = tree.root / "test" / "delta"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetLayoutError, match="empty class directory") as ei:
        index_dataset("imagefolder", tree.root)
    assert str(empty) in str(ei.value)
    shutil.rmtree(empty)
    shutil.rmtree(tree.root / "test")
    with pytest.raises(DatasetLayoutError, match="only one split") as ei:
        index_dataset("imagefolder", tree.root)
    assert str(tree.root / "test") in str(ei.value)


def test_imagefolder_class_only_in_train_warns_or_fails_strict(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    write_image(tree.root / "train" / "zeta" / "a.jpg")
    with pytest.warns(DatasetCountWarning, match="no test images.*zeta"):
        index = index_dataset("imagefolder", tree.root)
    assert index.classes[-1] == "zeta"
    with pytest.raises(DatasetLayoutError, match="zeta"):
        index_dataset("imagefolder", tree.root, strict=True)


def test_imagefolder_expected_counts(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    index_dataset("imagefolder", tree.root, expected_counts={"classes": 3, "train": 6, "test": 3}, strict=True)
    with pytest.raises(DatasetLayoutError, match="train: found 6, official 7"):
        index_dataset("imagefolder", tree.root, expected_counts={"classes": 3, "train": 7, "test": 3}, strict=True)

"""The raw tree as the file prepare depends on: it changes exactly when an image is added, removed or replaced,
and is not rewritten (nor re-dated) when the tree is the same."""

import os

import pytest
from fixtures import make_imagefolder_tree, write_image

from finesyn.config import DatasetConfig, ParamsError
from finesyn.data.raw_manifest import raw_manifest, write_if_changed


def _rows(text: str) -> dict[str, tuple[int, int]]:
    header, *lines = text.splitlines()
    assert header == "path\tsize\tmtime_ns"
    return {p: (int(s), int(m)) for p, s, m in (line.split("\t") for line in lines)}


def test_every_file_once_and_each_change_to_the_tree_changes_the_manifest(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    cfg = DatasetConfig(kind="imagefolder", root=tree.root)
    before = raw_manifest("own", cfg)
    rows = _rows(before)
    assert sorted(rows) == sorted(it.id for it in tree.items)  # root-relative, each file once
    assert all(rows[it.id][0] == it.path.stat().st_size for it in tree.items)
    assert raw_manifest("own", cfg) == before  # the same tree: the same bytes (sorted, no walk order)

    added = write_image(tree.root / "train/alpha/new.png", seed=7)
    assert set(_rows(raw_manifest("own", cfg))) == set(rows) | {"train/alpha/new.png"}
    added.unlink()
    assert raw_manifest("own", cfg) == before

    victim = tree.items[0].path
    st = victim.stat()
    write_image(victim, size=(41, 30), seed=99)  # replaced with another image...
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...under the old date: the size still tells
    assert raw_manifest("own", cfg) != before
    write_image(victim, size=(40, 30), seed=123)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # or the same size, a new date
    assert raw_manifest("own", cfg) != before


def test_a_dangling_link_is_listed_and_a_link_cycle_walked_once(tmp_path):
    tree = make_imagefolder_tree(tmp_path)
    (tree.root / "train/alpha/gone.png").symlink_to(tmp_path / "nowhere.png")
    (tree.root / "train/alpha/loop").symlink_to(tree.root / "train")
    rows = _rows(raw_manifest("own", DatasetConfig(kind="imagefolder", root=tree.root)))
    assert rows["train/alpha/gone.png"] == (-1, -1)  # giving it a target changes the manifest
    assert not any("/loop/" in p for p in rows) and len(rows) == 10  # 9 images and the dangling link, once each


def test_synthetic_has_no_raw_files_and_a_missing_root_names_its_key(tmp_path):
    assert "no raw files" in raw_manifest("synthetic", DatasetConfig(kind="synthetic"))
    with pytest.raises(ParamsError, match=r"datasets\.own\.root: directory .*nope.* does not exist"):
        raw_manifest("own", DatasetConfig(kind="imagefolder", root=tmp_path / "nope"))


def test_an_unchanged_manifest_keeps_its_file_and_date(tmp_path):
    """Snakemake runs the stage while it reads the graph and judges prepare by this file's date."""
    path = tmp_path / "m" / "own.tsv"
    assert write_if_changed(path, "a\n")
    os.utime(path, (0, 0))
    assert not write_if_changed(path, "a\n") and path.stat().st_mtime == 0
    assert write_if_changed(path, "b\n") and path.read_text() == "b\n" and path.stat().st_mtime > 0

"""The prepared-dataset cache: writer, parallel resumable prepare, reader."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures import (
    make_cub_tree,
    make_flat_jpegs,
    make_imagefolder_tree,
    truncate_file,
    write_garbage,
    write_png16,
)
from PIL import Image

from finesyn.data.cache import (
    IMAGES_FILE,
    MANIFEST_FILE,
    META_FILE,
    PARTIAL_FILE,
    PROGRESS_FILE,
    BadImagesError,
    CacheError,
    load_image,
    open_cache,
    prepare_from_index,
    write_cache_from_arrays,
)
from finesyn.data.sources import DatasetCountWarning, index_dataset
from finesyn.io import atomic_write_json, atomic_write_text

S = 24


def _reference(path: Path, size: int, fit: str = "center_crop") -> np.ndarray:
    """The documented transform, computed independently with PIL."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if fit == "squash":
        return np.asarray(img.resize((size, size), Image.BICUBIC))
    scale = size / min(w, h)
    nw, nh = (size, round(h * scale)) if w <= h else (round(w * scale), size)
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def _tree_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture
def folder(tmp_path):
    tree = make_imagefolder_tree(tmp_path, per_class=5, n_test=2)
    return tree, index_dataset("imagefolder", tree.root)


# --------------------------------------------------------------------------- bit depth


def test_16bit_png_is_scaled_not_saturated(tmp_path):
    """A 16-bit grey PNG keeps its tones (v >> 8, PIL's own rule for 16-bit RGB) instead of being
    clipped to white; grey and its RGB copy decode to the same 8-bit values."""
    values = np.array([0, 255, 256, 1000, 30000, 32768, 65280, 65535], dtype=np.uint16)
    grey = np.tile(values, (8, 1))  # 8 x 8, each column one known value
    want = np.tile(np.array([0, 0, 1, 3, 117, 128, 255, 255], dtype=np.uint8), (8, 1))
    g = load_image(write_png16(tmp_path / "grey16.png", grey), 8, fit="squash")
    rgb = load_image(write_png16(tmp_path / "rgb16.png", np.stack([grey] * 3, axis=-1)), 8, fit="squash")
    assert g.dtype == np.uint8 and (g == want[..., None]).all()
    assert (rgb == g).all()


def test_high_bit_depth_files_are_scaled_by_the_bits_their_values_use(tmp_path):
    """Keeping the high byte of every 16-bit word turned 8-bit content black and 12-bit content into 0..15."""
    ramp = np.tile(np.arange(8, dtype=np.uint16), (8, 1))
    eight = load_image(write_png16(tmp_path / "8in16.png", ramp * 36), 8, fit="squash")  # 0..252
    assert (eight[..., 0] == ramp * 36).all()
    twelve = load_image(write_png16(tmp_path / "12in16.png", ramp * 585), 8, fit="squash")  # 0..4095
    assert (twelve[..., 0] == (ramp * 585) >> 4).all() and twelve.max() == 255
    declared = load_image(write_png16(tmp_path / "sbit12.png", ramp * 14, sbit=12), 8, fit="squash")  # 0..98 of 12 bits
    assert (declared[..., 0] == (ramp * 14) >> 4).all()  # the file's sBIT, not the values, sets the scale
    rgb = np.stack([ramp * 36, ramp * 20, ramp], axis=-1)  # PIL alone decodes a 16-bit RGB PNG to its high bytes: black
    assert (load_image(write_png16(tmp_path / "rgb8in16.png", rgb), 8, fit="squash") == rgb).all()
    rgb12 = load_image(write_png16(tmp_path / "rgb12in16.png", rgb * 16), 8, fit="squash")  # 12-bit colour: 0..4032
    assert (rgb12 == rgb).all()
    Image.fromarray((ramp * 13).astype(np.int32), mode="I").save(tmp_path / "counts.tif")  # int32 TIFF, 0..91
    assert (load_image(tmp_path / "counts.tif", 8, fit="squash")[..., 0] == ramp * 13).all()


def test_flat_images_are_counted_in_meta_and_logged(tmp_path, caplog):
    from finesyn.config import DatasetConfig
    from finesyn.data.prepare import prepare_dataset

    tree = make_imagefolder_tree(tmp_path)
    blank = tree.items[0].path.with_suffix(".png")
    tree.items[0].path.unlink()
    Image.new("RGB", (20, 20), (0, 0, 0)).save(blank)
    cfg = DatasetConfig(kind="imagefolder", root=tree.root, image_size=S, crop_size=S, workers=1)
    with caplog.at_level("WARNING", logger="finesyn.prepare"):
        ds = prepare_dataset("mine", cfg, tmp_path / "out")
    assert ds.meta["constant_images"] == {"count": 1, "examples": [blank.relative_to(tree.root).as_posix()]}
    assert "1 of 9 images of mine decode to one flat colour" in caplog.text and "constant_images" in caplog.text


def test_bad_images_name_the_params_key_and_skipping_them_is_logged(tmp_path, caplog):
    from finesyn.config import DatasetConfig
    from finesyn.data.prepare import prepare_dataset

    tree = make_imagefolder_tree(tmp_path)
    write_garbage(tree.items[1].path)
    cfg = DatasetConfig(kind="imagefolder", root=tree.root, image_size=S, crop_size=S, workers=1)
    with pytest.raises(BadImagesError, match=r"set datasets\.mine\.on_bad_image: skip in params\.yaml"):
        prepare_dataset("mine", cfg, tmp_path / "out")
    with caplog.at_level("WARNING", logger="finesyn.prepare"):
        prepare_dataset("mine", cfg.model_copy(update={"on_bad_image": "skip"}), tmp_path / "out")
    assert (
        "datasets.mine.on_bad_image: skip dropped 1 unreadable image(s), e.g. " + tree.items[1].path.relative_to(tree.root).as_posix()
        in caplog.text
    )


def test_float_image_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F").save(path)
    with pytest.raises(ValueError, match="mode F"):
        load_image(path, 8)


# --------------------------------------------------------------------------- io helpers


def test_atomic_writes(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": [1, 2], "é": True})
    assert json.loads(p.read_text(encoding="utf-8")) == {"a": [1, 2], "é": True}
    atomic_write_text(p, "over")
    assert p.read_text() == "over"
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]  # no temp files left

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": Boom()})
    assert p.read_text() == "over" and [q.name for q in p.parent.iterdir()] == ["x.json"]


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("fit,workers", [("center_crop", 2), ("squash", 1)])
def test_prepare_round_trip(tmp_path, folder, fit, workers):
    tree, index = folder
    out = tmp_path / "prepared" / "ds"
    calls = []
    ds = prepare_from_index(index, out, image_size=S, fit=fit, workers=workers, chunk_size=4, progress=lambda d, n: calls.append((d, n)))
    assert sorted(p.name for p in out.iterdir()) == [IMAGES_FILE, MANIFEST_FILE, META_FILE]
    n = len(index.items)
    assert ds.images.shape == (n, S, S, 3) and ds.images.dtype == np.uint8
    assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
    for i, it in enumerate(index.items):
        np.testing.assert_array_equal(ds.images[i], _reference(it.path, S, fit), err_msg=str(it.path))
    assert ds.labels.tolist() == [it.label for it in index.items]
    assert ds.splits.tolist() == [it.split for it in index.items]
    assert ds.ids == [it.id for it in index.items]
    assert ds.sources == [it.path.relative_to(tree.root).as_posix() for it in index.items]
    assert ds.classes == tree.classes
    assert ds.meta["complete"] is True and list(ds.meta)[-1] == "complete"
    assert ds.meta["counts"] == {"train": 9, "test": 6} and ds.meta["image_size"] == S
    assert ds.meta["kind"] == "imagefolder" and ds.meta["skipped"] == []
    assert ds.meta["params"]["fit"] == fit
    assert ds.indices("test").tolist() == [i for i, it in enumerate(index.items) if it.split == "test"]
    assert calls[-1] == (n, n) and len(calls) == 4  # one call per chunk of 4
    with open(out / MANIFEST_FILE, newline="") as f:
        assert next(csv.reader(f)) == ["index", "id", "label", "split", "source"]


def test_prepare_cub_sources_relative_to_root(tmp_path):
    tree = make_cub_tree(tmp_path / "raw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetCountWarning)
        index = index_dataset("cub200", tree.root)
    ds = prepare_from_index(
        index,
        tmp_path / "cub",
        image_size=16,
        workers=2,
        chunk_size=2,
        meta_extra={"name": "cub", "params": {"fit": "bogus", "seed": 1}, "note": "x"},
    )
    assert ds.meta["params"]["fit"] == "center_crop" and ds.meta["params"]["seed"] == 1  # computed wins
    assert ds.meta["note"] == "x" and ds.meta["name"] == "cub"
    assert ds.sources[0].startswith("images/001.Bird_A/")
    assert ds.meta["kind"] == "cub200" and ds.meta["expected_counts"]["classes"] == 200
    np.testing.assert_array_equal(ds.images[5], _reference(tree.items[5].path, 16))


def test_complete_cache_is_reused_and_not_silently_replaced(tmp_path, folder):
    _, index = folder
    out = tmp_path / "c"
    prepare_from_index(index, out, image_size=S, workers=1)
    before = _tree_bytes(out)
    calls = []
    prepare_from_index(index, out, image_size=S, workers=1, progress=lambda d, n: calls.append(d))
    assert calls == [] and _tree_bytes(out) == before
    with pytest.raises(CacheError, match="overwrite=True"):
        prepare_from_index(index, out, image_size=S + 8, workers=1)
    ds = prepare_from_index(index, out, image_size=S + 8, workers=1, overwrite=True)
    assert ds.image_size == S + 8


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs; needs mount rights, as root in CI's container has)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


_PREPARE_ON_FULL_DISK = """
import sys
from finesyn.data.cache import prepare_from_index
from finesyn.data.sources import index_dataset
from finesyn.io import OutputWriteError
if __name__ == "__main__":
    index = index_dataset("imagefolder", sys.argv[1])
    try:
        prepare_from_index(index, sys.argv[2], image_size=int(sys.argv[3]), workers=2, chunk_size=4, overwrite=True)
    except OutputWriteError as e:
        print(e)
        sys.exit(3)
"""


def test_prepare_on_a_full_disk_says_so_and_changes_nothing(tmp_path, folder, small_disk):
    """Before: the sparse memmap's pages found no block, the workers died of SIGBUS
    (BrokenProcessPool, or rc 135 with one worker) and .images.npy.tmp was left behind."""
    tree, index = folder
    out = small_disk / "prepared"
    prepare_from_index(index, out, image_size=S, workers=1)  # a small complete cache that fits
    before = _tree_bytes(out)
    script = tmp_path / "prepare_big.py"
    script.write_text(_PREPARE_ON_FULL_DISK)
    r = subprocess.run([sys.executable, str(script), str(tree.root), str(out), "384"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "disk full" in r.stdout and "GiB free" in r.stdout and "unchanged" in r.stdout
    assert _tree_bytes(out) == before  # the previous cache intact, no temporary file left
    assert open_cache(out).image_size == S


def test_preallocation_failure_leaves_no_file(tmp_path, folder, monkeypatch):
    _, index = folder
    out = tmp_path / "c"
    prepare_from_index(index, out, image_size=S, workers=1)
    before = _tree_bytes(out)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="disk full"):
        prepare_from_index(index, out, image_size=S + 8, workers=1, overwrite=True)
    assert _tree_bytes(out) == before


# --------------------------------------------------------------------------- bad images


def _with_bad_images(tmp_path):
    tree = make_imagefolder_tree(tmp_path, per_class=5, n_test=2)
    truncated = truncate_file(tree.items[2].path)  # a JPEG cut short
    garbage = write_garbage(tree.items[7].path)  # not an image at all
    return tree, index_dataset("imagefolder", tree.root), [truncated, garbage]


def test_bad_images_fail_lists_all_paths(tmp_path):
    tree, index, bad = _with_bad_images(tmp_path)
    out = tmp_path / "c"
    with pytest.raises(BadImagesError) as ei:
        prepare_from_index(index, out, image_size=S, workers=2, chunk_size=3, on_bad_image="fail")
    assert sorted(p for p, _ in ei.value.bad) == sorted(map(str, bad))
    for p in bad:
        assert str(p) in str(ei.value)
    assert "truncated" in str(ei.value)
    assert not (out / META_FILE).exists()
    with pytest.raises(CacheError, match="unfinished"):
        open_cache(out)

    # re-run with skip: reuses the decoded chunks, drops and records the bad images
    calls = []
    ds = prepare_from_index(index, out, image_size=S, workers=2, chunk_size=3, on_bad_image="skip", progress=lambda d, n: calls.append(d))
    assert calls == []  # nothing re-decoded
    good = [it for it in index.items if it.path not in bad]
    assert len(ds) == len(good) == len(index.items) - 2
    assert ds.ids == [it.id for it in good]
    bad_in_order = [it.path for it in index.items if it.path in bad]
    assert [s["source"] for s in ds.meta["skipped"]] == [p.relative_to(tree.root).as_posix() for p in bad_in_order]
    assert all(s["reason"] for s in ds.meta["skipped"])
    for i, it in enumerate(good):
        np.testing.assert_array_equal(ds.images[i], _reference(it.path, S))
    assert ds.meta["counts"]["train"] + ds.meta["counts"]["test"] == len(good)
    # the same prepare, now asked to fail, reports the recorded bad images
    with pytest.raises(BadImagesError):
        prepare_from_index(index, out, image_size=S, workers=2, chunk_size=3, on_bad_image="fail")


def test_missing_image_at_prepare_time_is_bad(tmp_path, folder):
    tree, index = folder
    index.items[0].path.unlink()
    with pytest.raises(BadImagesError, match="FileNotFoundError"):
        prepare_from_index(index, tmp_path / "c", image_size=S, workers=1)


# --------------------------------------------------------------------------- resume


class Interrupt(Exception):
    pass


def _interrupt_after(k: int):
    seen = []

    def cb(done, total):
        seen.append(done)
        if len(seen) >= k:
            raise Interrupt(f"stop after {done}/{total}")

    return cb, seen


@pytest.mark.parametrize("workers,on_bad", [(2, "fail"), (1, "fail"), (2, "skip")])
def test_interrupted_prepare_resumes_byte_identical(tmp_path, workers, on_bad):
    tree = make_imagefolder_tree(tmp_path, per_class=6, n_test=2)  # 18 images
    if on_bad == "skip":
        truncate_file(tree.items[3].path)
    index = index_dataset("imagefolder", tree.root)
    kw = dict(image_size=S, workers=workers, chunk_size=2, on_bad_image=on_bad)  # 9 chunks

    ref = prepare_from_index(index, tmp_path / "ref", **kw)

    out = tmp_path / "resumed"
    cb, seen = _interrupt_after(3)
    with pytest.raises(Interrupt):
        prepare_from_index(index, out, progress=cb, **kw)
    assert not (out / META_FILE).exists() and not (out / IMAGES_FILE).exists()
    assert (out / PARTIAL_FILE).exists()
    done = json.loads((out / PROGRESS_FILE).read_text())["done"]
    assert len(done) == 3
    with pytest.raises(CacheError, match="unfinished"):
        open_cache(out)

    calls = []
    ds = prepare_from_index(index, out, progress=lambda d, n: calls.append(d), **kw)
    assert len(calls) == 9 - 3 and calls[0] >= 3 * 2  # completed chunks were not redone
    assert _tree_bytes(out) == _tree_bytes(ref.path)
    assert sorted(p.name for p in out.iterdir()) == [IMAGES_FILE, MANIFEST_FILE, META_FILE]
    np.testing.assert_array_equal(ds.images, ref.images)


_CHILD = r"""
import sys, time
from finesyn.data.sources import index_dataset
from finesyn.data.cache import prepare_from_index
if __name__ == "__main__":
    idx = index_dataset("imagefolder", sys.argv[1], split_ratio=0.5)
    prepare_from_index(idx, sys.argv[2], image_size=16, workers=2, chunk_size=4,
                       progress=lambda d, n: time.sleep(0.2))
"""


def test_killed_prepare_resumes_byte_identical(tmp_path):
    """A real crash: SIGKILL the whole process tree mid-prepare, then resume in-process."""
    raw = make_flat_jpegs(tmp_path / "raw", 48, size=(60, 45), n_classes=4)  # 12 chunks
    index = index_dataset("imagefolder", raw, split_ratio=0.5)
    out = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(raw), str(out)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(json.loads((out / PROGRESS_FILE).read_text())["done"]) >= 3:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "child finished or failed before it could be killed"
    assert not (out / META_FILE).exists()
    with pytest.raises(CacheError):
        open_cache(out)

    calls = []
    prepare_from_index(index, out, image_size=16, workers=2, chunk_size=4, progress=lambda d, n: calls.append(d))
    assert 0 < len(calls) <= 12 - 3
    ref = prepare_from_index(index, tmp_path / "ref", image_size=16, workers=1, chunk_size=4)
    assert _tree_bytes(out) == _tree_bytes(ref.path)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (ppid links)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(d.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_prepare_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of the prepare process alone (not its group): the pool's workers, the forkserver and
    the resource tracker must not live on (before: all four alive after 50 s, ~130 MB)."""
    raw = make_flat_jpegs(tmp_path / "raw", 48, size=(60, 45), n_classes=4)
    out = tmp_path / "orphans"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(raw), str(out)], start_new_session=True)
    try:
        deadline, helpers = time.monotonic() + 120, set()
        while time.monotonic() < deadline and proc.poll() is None:
            helpers = _descendants(proc.pid)
            try:
                if len(helpers) >= 3 and json.loads((out / PROGRESS_FILE).read_text())["done"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None and len(helpers) >= 3, "the prepare ended before its workers could be seen"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(map(_alive, helpers)):
            time.sleep(0.1)
        assert not [h for h in helpers if _alive(h)], "worker processes outlived the killed prepare"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_resume_discards_progress_when_inputs_change(tmp_path, folder):
    tree, index = folder
    out = tmp_path / "c"
    cb, _ = _interrupt_after(1)
    with pytest.raises(Interrupt):
        prepare_from_index(index, out, image_size=S, workers=1, chunk_size=4, progress=cb)
    # an image changes on disk -> the fingerprint differs -> start over (all 4 chunks)
    os.utime(index.items[0].path, ns=(1, 1))
    calls = []
    prepare_from_index(index, out, image_size=S, workers=1, chunk_size=4, progress=lambda d, n: calls.append(d))
    assert len(calls) == 4


def test_interrupt_during_publish_resumes(tmp_path, folder, monkeypatch):
    """Crash after images.npy was published but before meta.json: the rerun finishes it."""
    _, index = folder
    out = tmp_path / "c"
    import finesyn.data.cache as cache_mod

    real = cache_mod.atomic_write_json

    def boom(path, obj, **kw):
        if Path(path).name == META_FILE:
            raise Interrupt("killed before meta")
        return real(path, obj, **kw)

    monkeypatch.setattr(cache_mod, "atomic_write_json", boom)
    with pytest.raises(Interrupt):
        prepare_from_index(index, out, image_size=S, workers=1)
    assert (out / IMAGES_FILE).exists() and not (out / META_FILE).exists()
    with pytest.raises(CacheError):
        open_cache(out)
    monkeypatch.setattr(cache_mod, "atomic_write_json", real)
    calls = []
    ds = prepare_from_index(index, out, image_size=S, workers=1, progress=lambda d, n: calls.append(d))
    assert calls == [] and len(ds) == len(index.items)


# --------------------------------------------------------------------------- arrays + reader


def _arrays(n=6, s=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    labels = [i % 3 for i in range(n)]
    splits = ["train" if i < 4 else "test" for i in range(n)]
    ids = [f"g{i}" for i in range(n)]
    return images, labels, splits, ids


def test_write_cache_from_arrays_round_trip(tmp_path):
    images, labels, splits, ids = _arrays()
    ds = write_cache_from_arrays(
        tmp_path / "gen",
        images,
        labels,
        splits,
        ids,
        None,
        ["a", "b", "c"],
        {"name": "synthetic", "params": {"seed": 1}, "generator": "v1"},
    )
    np.testing.assert_array_equal(ds.images, images)
    assert ds.labels.tolist() == labels and ds.splits.tolist() == splits and ds.ids == ids
    assert ds.sources == ["generated"] * 6
    assert ds.meta["name"] == "synthetic" and ds.meta["kind"] == "generated"
    assert ds.meta["params"] == {"seed": 1} and ds.meta["generator"] == "v1"
    assert ds.meta["counts"] == {"train": 4, "test": 2}
    with pytest.raises(ValueError, match="labels has 5 entries"):
        write_cache_from_arrays(tmp_path / "x", images, labels[:5], splits, ids, None, ["a", "b", "c"])
    with pytest.raises(ValueError, match="must not set"):
        write_cache_from_arrays(tmp_path / "x", images, labels, splits, ids, None, ["a", "b", "c"], {"complete": False})


def _gen(tmp_path):
    images, labels, splits, ids = _arrays()
    return write_cache_from_arrays(tmp_path / "gen", images, labels, splits, ids, None, ["a", "b", "c"]).path


def test_open_cache_rejects_incomplete(tmp_path):
    d = _gen(tmp_path)
    meta = json.loads((d / META_FILE).read_text())
    del meta["complete"]
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CacheError, match=r"complete.*unfinished") as ei:
        open_cache(d)
    assert str(d) in str(ei.value)
    meta["complete"] = False
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="complete"):
        open_cache(d)
    (d / META_FILE).unlink()
    with pytest.raises(CacheError, match=f"no {META_FILE}") as ei:
        open_cache(d)
    assert str(d) in str(ei.value)
    with pytest.raises(CacheError, match="does not exist"):
        open_cache(tmp_path / "nope")


def test_open_cache_rejects_length_mismatch(tmp_path):
    d = _gen(tmp_path)
    lines = (d / MANIFEST_FILE).read_text().splitlines(keepends=True)
    (d / MANIFEST_FILE).write_text("".join(lines[:-1]))
    with pytest.raises(CacheError, match="disagree in length") as ei:
        open_cache(d)
    assert str(d) in str(ei.value)

    d = _gen(tmp_path / "b")
    np.save(d / IMAGES_FILE, np.zeros((7, 8, 8, 3), np.uint8))
    with pytest.raises(CacheError, match="7 images"):
        open_cache(d)
    np.save(d / IMAGES_FILE, np.zeros((6, 9, 9, 3), np.uint8))
    with pytest.raises(CacheError, match="expected uint8"):
        open_cache(d)


def test_rewriting_a_cache_removes_completion_marker_first(tmp_path, monkeypatch):
    d = _gen(tmp_path)
    import finesyn.data.cache as cache_mod

    def boom(*a, **k):
        raise Interrupt("crash while writing images")

    monkeypatch.setattr(cache_mod, "_copy_rows_atomic", boom)
    images, labels, splits, ids = _arrays()
    with pytest.raises(Interrupt):
        write_cache_from_arrays(d, images, labels, splits, ids, None, ["a", "b", "c"])
    with pytest.raises(CacheError, match="unfinished"):
        open_cache(d)

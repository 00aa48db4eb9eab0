"""The prepared-dataset cache (docs/architecture.md, "Prepared-dataset cache").

A directory holding

* ``images.npy``   uint8 ``(N, S, S, 3)`` RGB/HWC, read with ``np.load(mmap_mode="r")``;
* ``manifest.csv`` ``index,id,label,split,source``;
* ``meta.json``    ``name, kind, classes, image_size, counts, skipped, params, constant_images (decoded
  files only: how many are one flat colour, a few of their paths), complete``.

``meta.json`` with ``"complete": true`` is always written last (atomically), and removed first
whenever a directory is (re)written, so a directory that looks complete is complete.

:func:`prepare_from_index` decodes every image of a :class:`DatasetIndex` once, in chunks, over
several processes, into ``images.partial.npy``. After each chunk is flushed to disk its index is
recorded in ``prepare.progress.json`` (atomically); an interrupted prepare (exception, Ctrl-C,
kill) resumes from the recorded chunks when called again with the same index and parameters,
and produces a byte-identical cache. Only when every chunk is done is the partial array
published as ``images.npy`` (compacted if bad images were skipped), then the manifest, then
``meta.json``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from finesyn.errors import UserError
from finesyn.io import atomic_write_json, atomic_write_text, fsync_dir, preallocated_npy

from .bit_depth import declared_bits, to_8bit, wide_png
from .prepared import (
    IMAGES_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    META_FILE,
    PROGRESS_FILE,
    SPLITS,
    CacheError,
    PreparedDataset,
    open_cache,
)
from .sources.base import DatasetIndex

__all__ = [
    "CacheError",
    "BadImagesError",
    "PreparedDataset",
    "load_image",
    "resize_to_square",
    "write_cache_from_arrays",
    "prepare_from_index",
    "open_cache",
    "IMAGES_FILE",
    "MANIFEST_FILE",
    "META_FILE",
    "PARTIAL_FILE",
    "PROGRESS_FILE",
]

FORMAT_VERSION = 1
PARTIAL_FILE = "images.partial.npy"
_RESERVED_META = ("classes", "image_size", "counts", "skipped", "complete")

Fit = Literal["center_crop", "squash"]
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class BadImagesError(UserError, RuntimeError):
    """Images that could not be decoded (``on_bad_image="fail"``); ``.bad`` = [(path, reason)]."""

    def __init__(self, bad: Sequence[tuple[str, str]], out_dir: Path | None = None, dataset: str = "<name>"):
        self.bad = list(bad)
        lines = "\n".join(f"  {p}: {r}" for p, r in self.bad)
        hint = (
            f"\nDecoded chunks are kept in {out_dir}; set datasets.{dataset}.on_bad_image: skip in params.yaml to drop "
            "these images (from Python: on_bad_image='skip'), or replace the files, and run again."
            if out_dir
            else ""
        )
        super().__init__(f"{len(self.bad)} unreadable image(s):\n{lines}{hint}")


# --------------------------------------------------------------------------- images


def resize_to_square(img: Image.Image, size: int, fit: Fit = "center_crop", resample: str = "bicubic") -> Image.Image:
    """``center_crop``: resize so the shorter side is ``size`` (the longer one is rounded), then
    take the central ``size``x``size`` crop (offsets floor((w - size) / 2)); ``squash``: resize to
    ``size``x``size`` ignoring the aspect ratio."""
    rs = _RESAMPLE[resample]
    w, h = img.size
    if fit == "squash":
        return img if (w, h) == (size, size) else img.resize((size, size), rs)
    if fit != "center_crop":
        raise ValueError(f"fit must be 'center_crop' or 'squash', got {fit!r}")
    if w <= h:
        nw, nh = size, max(size, round(h * size / w))
    else:
        nw, nh = max(size, round(w * size / h)), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), rs)
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return img


def load_image(path: str | os.PathLike[str], size: int, fit: Fit = "center_crop", resample: str = "bicubic") -> np.ndarray:
    """Decode ``path`` with PIL (fully: truncated files raise), convert to RGB, resize/crop to
    ``size``; returns uint8 ``(size, size, 3)``. EXIF orientation is not applied (as in
    torchvision's loaders)."""
    with Image.open(path) as im:
        im.load()
        rgb = (wide_png(im, path) or to_8bit(im, declared_bits(im, path))).convert("RGB")
    out = np.asarray(resize_to_square(rgb, size, fit, resample), dtype=np.uint8)
    if out.shape != (size, size, 3):  # pragma: no cover - defensive
        raise ValueError(f"unexpected decoded shape {out.shape}")
    return out


def _worker_init(owner: int) -> None:
    # Ctrl-C goes to the whole process group: let the parent handle it (it stops submitting,
    # waits for the running chunks and re-raises) instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(owner)


def _die_with(owner: int) -> None:
    """End this worker when the process that prepares (``owner``) is gone, kill -9 included.

    A pool worker's parent is the forkserver, not the owner, and neither notices a SIGKILLed owner
    while idle: without this they (and the resource tracker they keep open) live on. A daemon
    thread polls the owner itself (PR_SET_PDEATHSIG would watch only the forkserver), on any POSIX
    system; the forkserver and the tracker exit once the workers have.
    """

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if not _owner_alive(owner):
                os._exit(1)

    threading.Thread(target=watch, name="finesyn-owner-watch", daemon=True).start()


def _owner_alive(pid: int) -> bool:
    """True while ``pid`` runs; a killed owner its parent has not reaped yet (a zombie) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _process_chunk(partial: str, start: int, paths: Sequence[str], size: int, fit: Fit, resample: str) -> list[tuple[int, str]]:
    """Decode ``paths`` into rows ``start..`` of the partial array; flush; return bad rows."""
    buf = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    bad: list[tuple[int, str]] = []
    for j, p in enumerate(paths):
        try:
            buf[j] = load_image(p, size, fit, resample)
        except Exception as e:  # any decode failure makes the image "bad"
            bad.append((start + j, f"{type(e).__name__}: {e}"))
    mm = np.load(partial, mmap_mode="r+")
    try:
        mm[start : start + len(paths)] = buf
        mm.flush()
    finally:
        del mm
    return bad


# --------------------------------------------------------------------------- writing helpers


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _invalidate(out: Path, *extra: str) -> None:
    """Remove the completion marker first, then the given files."""
    _unlink(out / META_FILE)
    fsync_dir(out)
    for name in extra:
        _unlink(out / name)


def _manifest_text(ids: Sequence[str], labels: Sequence[int], splits: Sequence[str], sources: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for i, row in enumerate(zip(ids, labels, splits, sources)):
        w.writerow((i, row[0], int(row[1]), row[2], row[3]))
    return buf.getvalue()


def _copy_rows_atomic(dst: Path, src: np.ndarray, rows: np.ndarray | None, block: int = 256) -> None:
    """Write ``src[rows]`` (all rows if None) to ``dst`` as .npy, atomically."""
    n = src.shape[0] if rows is None else len(rows)
    tmp = dst.with_name(f".{dst.name}.tmp")
    _unlink(tmp)
    preallocated_npy(tmp, (n, *src.shape[1:]))
    mm = np.load(tmp, mmap_mode="r+")
    try:
        for a in range(0, n, block):
            b = min(a + block, n)
            mm[a:b] = src[a:b] if rows is None else src[rows[a:b]]
        mm.flush()
    finally:
        del mm
    _fsync_file(tmp)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def _counts(splits: Sequence[str]) -> dict[str, int]:
    """Images per split; `unlabelled` only where there are some (a cache without them reads as it always did)."""
    counts = {s: int(sum(x == s for x in splits)) for s in SPLITS}
    return counts if counts["unlabelled"] else {"train": counts["train"], "test": counts["test"]}


def _meta(
    *,
    name: str,
    kind: str,
    classes: Sequence[str],
    image_size: int,
    splits: Sequence[str],
    skipped: list[dict[str, str]],
    params: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    bad_keys = [k for k in extra if k in _RESERVED_META]
    if bad_keys:
        raise ValueError(f"meta_extra must not set {bad_keys}: they are computed")
    meta: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "classes": list(classes),
        "image_size": int(image_size),
        "counts": _counts(splits),
        "skipped": skipped,
        # caller's params (e.g. the params.yaml section), then the computed
        # ones, which must win (the fingerprint decides reuse/resume)
        "params": {**dict(extra.get("params") or {}), **params},
    }
    for k, v in extra.items():
        if k not in ("name", "kind", "params"):
            meta[k] = v
    meta["format_version"] = FORMAT_VERSION
    meta["complete"] = True  # last key; the file itself is written last
    return meta


# --------------------------------------------------------------------------- public writers


def write_cache_from_arrays(
    out_dir: str | os.PathLike[str],
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    splits: Sequence[str] | np.ndarray,
    ids: Sequence[str] | np.ndarray,
    sources: Sequence[str] | None,
    classes: Sequence[str],
    meta_extra: dict[str, Any] | None = None,
) -> PreparedDataset:
    """Write an in-memory dataset (e.g. the generated one) as a cache.

    ``images`` uint8 ``(N, S, S, 3)``; ``sources`` defaults to ``"generated"`` for every row;
    ``meta_extra`` may set ``name`` (default: directory name), ``kind`` (default ``generated``),
    ``params`` (merged) and any other non-reserved key.
    """
    out = Path(out_dir)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("cannot write an empty cache")
    labels = [int(x) for x in labels]
    splits = [str(s) for s in splits]
    ids = [str(i) for i in ids]
    sources = ["generated"] * n if sources is None else [str(s) for s in sources]
    for what, seq in (("labels", labels), ("splits", splits), ("ids", ids), ("sources", sources)):
        if len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries, images has {n}")
    if set(splits) - {"train", "test"}:
        raise ValueError(f"splits must be 'train'/'test', got {sorted(set(splits) - {'train', 'test'})}")
    if len(set(ids)) != n:
        raise ValueError("ids must be unique")
    if labels and not (0 <= min(labels) and max(labels) < len(classes)):
        raise ValueError(f"labels must be in [0, {len(classes)})")
    extra = dict(meta_extra or {})
    meta = _meta(
        name=extra.get("name", out.name),
        kind=extra.get("kind", "generated"),
        classes=classes,
        image_size=images.shape[1],
        splits=splits,
        skipped=[],
        params={},
        extra=extra,
    )

    out.mkdir(parents=True, exist_ok=True)
    _invalidate(out, PROGRESS_FILE, PARTIAL_FILE)
    _copy_rows_atomic(out / IMAGES_FILE, images, None)
    atomic_write_text(out / MANIFEST_FILE, _manifest_text(ids, labels, splits, sources))
    atomic_write_json(out / META_FILE, meta)
    return open_cache(out)


def _fingerprint(index: DatasetIndex, sources: list[str], *, image_size: int, fit: str, resample: str, chunk_size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT_VERSION, image_size, fit, resample, chunk_size, len(index.items)]).encode())
    for it, src in zip(index.items, sources):
        stat: tuple[int, int] | tuple[None, None]
        try:
            st = os.stat(it.path)
            stat = (st.st_size, st.st_mtime_ns)
        except OSError:
            stat = (None, None)
        h.update(json.dumps([str(it.path), src, it.label, it.split, it.id, *stat]).encode())
        h.update(b"\0")
    return h.hexdigest()


def _default_mp_context() -> multiprocessing.context.BaseContext:
    # forkserver/spawn: never fork a parent that may hold torch/OpenMP threads.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def prepare_from_index(
    index: DatasetIndex,
    out_dir: str | os.PathLike[str],
    *,
    image_size: int,
    fit: Fit = "center_crop",
    workers: int = 2,
    on_bad_image: Literal["fail", "skip"] = "fail",
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 64,
    resample: str = "bicubic",
    overwrite: bool = False,
    meta_extra: dict[str, Any] | None = None,
    mp_context: multiprocessing.context.BaseContext | None = None,
) -> PreparedDataset:
    """Decode, resize and store every image of ``index`` as a cache in ``out_dir``.

    ``progress(done_images, total_images)`` is called in this process after each chunk has been
    flushed and recorded (an exception raised there interrupts the prepare; calling again
    resumes). Resuming requires the same index (paths, labels, splits, ids, file sizes and
    mtimes), ``image_size``, ``fit``, ``resample`` and ``chunk_size``; otherwise the unfinished
    work is discarded and the prepare starts over. A *complete* cache built from the same inputs
    is returned as is; a complete cache built from different inputs is replaced only with
    ``overwrite=True``.

    ``workers > 1`` uses a process pool started with ``forkserver`` (``spawn`` where unavailable;
    override with ``mp_context``), so a script calling this must guard its entry point with
    ``if __name__ == "__main__":`` (as any multiprocessing code must).

    Unreadable images: ``on_bad_image="fail"`` raises :class:`BadImagesError` listing every bad
    path once all chunks are done (the decoded chunks are kept, so re-running with ``"skip"``
    is cheap); ``"skip"`` drops them and records them in ``meta["skipped"]``.
    """
    image_size, chunk_size, workers = _checked_arguments(index, on_bad_image, fit, resample, image_size, chunk_size, workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = [index.relative_source(it) for it in index.items]
    fp = _fingerprint(index, sources, image_size=image_size, fit=fit, resample=resample, chunk_size=chunk_size)
    root = str(index.root) if index.root else None
    params = {
        "image_size": image_size,
        "fit": fit,
        "resample": resample,
        "chunk_size": chunk_size,
        "on_bad_image": on_bad_image,
        "root": root,
        "fingerprint": fp,
    }
    reused = _complete_cache(out, fp, on_bad_image, overwrite)
    if reused is not None:
        return reused
    state = _work_state(out, fp, len(index.items), image_size, chunk_size)
    _decode_chunks(out, index.items, state, image_size, fit, resample, chunk_size, workers, progress, mp_context)
    return _publish(out, index, sources, state, params, meta_extra)


def _checked_arguments(index, on_bad_image, fit, resample, image_size, chunk_size, workers) -> tuple[int, int, int]:
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    if fit not in ("center_crop", "squash"):
        raise ValueError(f"fit must be 'center_crop' or 'squash', got {fit!r}")
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    if int(image_size) < 1 or int(chunk_size) < 1 or int(workers) < 1:
        raise ValueError("image_size, chunk_size and workers must be >= 1")
    if len(index.items) == 0:
        raise ValueError(f"dataset index {index.name!r} has no images")
    return int(image_size), int(chunk_size), int(workers)


def _complete_cache(out: Path, fp: str, on_bad_image: str, overwrite: bool) -> PreparedDataset | None:
    """The complete cache already in `out` if it was built from the same inputs; None to (re)build."""
    meta_path = out / META_FILE
    if not meta_path.exists():
        return None
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    old = old if isinstance(old, dict) else {}
    params = old.get("params")
    old_params = params if isinstance(params, dict) else {}
    if old.get("complete") is True and old_params.get("fingerprint") == fp:
        skipped_before = old.get("skipped") or []
        if skipped_before and on_bad_image == "fail":
            raise BadImagesError([(s.get("source", "?"), s.get("reason", "?")) for s in skipped_before])
        if not skipped_before or old_params.get("on_bad_image") == on_bad_image:
            return open_cache(out)
    if old.get("complete") is True and not overwrite:
        raise CacheError(
            f"{out} already holds a complete prepared dataset built from different inputs/parameters: delete it "
            f"(rm -r {out}) and run again (`dvc repro` does that itself); from Python, prepare_from_index(..., overwrite=True) replaces it"
        )
    return None


def _work_state(out: Path, fp: str, n: int, image_size: int, chunk_size: int) -> dict:
    """The progress record of an unfinished prepare of the same inputs (resume), or a fresh one."""
    partial, final, progress_path = out / PARTIAL_FILE, out / IMAGES_FILE, out / PROGRESS_FILE
    state: Any = None  # the progress file's JSON
    if progress_path.exists():
        try:
            state = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
    n_chunks = (n + chunk_size - 1) // chunk_size
    resumable = (
        isinstance(state, dict)
        and state.get("fingerprint") == fp
        and state.get("n") == n
        and state.get("chunk_size") == chunk_size
        and (
            partial.exists()
            # finished chunks already published as images.npy, then interrupted
            or (final.exists() and len(state.get("done", [])) == n_chunks)
        )
    )
    if resumable and partial.exists():
        try:
            shape = np.load(partial, mmap_mode="r").shape
        except Exception:
            shape = None
        resumable = shape == (n, image_size, image_size, 3)
    if resumable:
        _invalidate(out)  # a stale meta.json (e.g. overwrite) must go before anything else
        return state
    # allocate the new work file before touching the old cache: a full disk then changes nothing
    _unlink(partial)
    preallocated_npy(partial, (n, image_size, image_size, 3))
    _invalidate(out, PROGRESS_FILE, IMAGES_FILE, MANIFEST_FILE)
    state = {"format_version": FORMAT_VERSION, "fingerprint": fp, "n": n, "chunk_size": chunk_size, "done": [], "bad": {}}
    atomic_write_json(progress_path, state)
    return state


def _decode_chunks(out, items, state, image_size, fit, resample, chunk_size, workers, progress, mp_context) -> None:
    """Decode every chunk not yet done into the work file, recording each in `state` (and on disk) as it lands."""
    partial, progress_path, n = out / PARTIAL_FILE, out / PROGRESS_FILE, len(items)
    done: set[int] = {int(c) for c in state["done"]}
    bad_by_chunk: dict[str, list[list[Any]]] = {str(k): v for k, v in state["bad"].items()}

    def chunk_len(c: int) -> int:
        return min(chunk_size, n - c * chunk_size)

    def record(c: int, bad: list[tuple[int, str]]) -> None:
        done.add(c)
        bad_by_chunk[str(c)] = [[int(i), r] for i, r in bad]
        state["done"] = sorted(done)
        state["bad"] = {k: bad_by_chunk[k] for k in sorted(bad_by_chunk, key=int)}
        atomic_write_json(progress_path, state, indent=None)
        if progress is not None:
            progress(sum(chunk_len(d) for d in done), n)

    todo = [c for c in range((n + chunk_size - 1) // chunk_size) if c not in done]
    if not todo or not partial.exists():
        return
    paths = [str(it.path) for it in items]
    args = [
        (c, (str(partial), c * chunk_size, paths[c * chunk_size : c * chunk_size + chunk_len(c)], image_size, fit, resample)) for c in todo
    ]
    if workers == 1 or len(todo) == 1:
        for c, a in args:
            record(c, _process_chunk(*a))
        return
    ex = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=mp_context or _default_mp_context(),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    try:
        pending = {ex.submit(_process_chunk, *a): c for c, a in args}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: pending[f]):
                record(pending.pop(f), f.result())
    finally:
        # On interruption: drop queued chunks, let running ones finish (they are
        # simply not recorded and will be redone on resume).
        ex.shutdown(wait=True, cancel_futures=True)


def _publish(out: Path, index: DatasetIndex, sources: list[str], state: dict, params: dict, meta_extra: dict | None) -> PreparedDataset:
    """All chunks done: drop bad images (or fail), publish images.npy, the manifest and meta.json."""
    items, image_size, on_bad_image = index.items, params["image_size"], params["on_bad_image"]
    partial, final, n = out / PARTIAL_FILE, out / IMAGES_FILE, len(index.items)
    bad = sorted((int(i), r) for v in state["bad"].values() for i, r in v)
    if bad and on_bad_image == "fail":
        raise BadImagesError([(str(items[i].path), r) for i, r in bad], out, (meta_extra or {}).get("name", index.name))
    bad_idx = {i for i, _ in bad}
    keep = np.array([i for i in range(n) if i not in bad_idx], dtype=np.int64)
    if len(keep) == 0:
        raise BadImagesError([(str(items[i].path), r) for i, r in bad], None)
    if partial.exists():
        if bad:
            src = np.load(partial, mmap_mode="r")
            _copy_rows_atomic(final, src, keep)
            del src
            _unlink(partial)
        else:
            os.replace(partial, final)
        fsync_dir(out)
    shape = np.load(final, mmap_mode="r").shape
    if shape != (len(keep), image_size, image_size, 3):  # pragma: no cover - defensive
        raise CacheError(f"{final} has shape {shape}, expected {(len(keep), image_size, image_size, 3)}; delete {out} and prepare again")
    kept = [items[i] for i in keep]
    manifest = _manifest_text([it.id for it in kept], [it.label for it in kept], [it.split for it in kept], [sources[i] for i in keep])
    atomic_write_text(out / MANIFEST_FILE, manifest)
    skipped = [{"source": sources[i], "reason": r} for i, r in bad]
    extra = dict(meta_extra or {})
    meta = _meta(
        name=extra.get("name", index.name),
        kind=extra.get("kind", index.kind),
        classes=index.classes,
        image_size=image_size,
        splits=[it.split for it in kept],
        skipped=skipped,
        params=params,
        extra=extra,
    )
    if index.expected_counts is not None:
        meta.setdefault("expected_counts", dict(index.expected_counts))
    flat = _flat_rows(final)
    meta["constant_images"] = {"count": len(flat), "examples": [sources[keep[i]] for i in flat[:5]]}
    meta["complete"] = meta.pop("complete")  # keep "complete" the last key
    atomic_write_json(out / META_FILE, meta)
    _unlink(out / PROGRESS_FILE)
    fsync_dir(out)
    return open_cache(out)


def _flat_rows(images_file: Path, block: int = 1024) -> list[int]:
    """Rows of a published images.npy that are one colour: blank files, or a bit depth decoded wrong."""
    a = np.load(images_file, mmap_mode="r")
    flat = []
    for start in range(0, len(a), block):
        rows = a[start : start + block].reshape(min(block, len(a) - start), -1)
        flat += (start + np.flatnonzero(rows.min(axis=1) == rows.max(axis=1))).tolist()
    del a
    return flat

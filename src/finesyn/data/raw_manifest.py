"""A dataset's raw tree as one line per file (path, size, modification time): the file `prepare` depends on.

dvc.yaml cannot name `datasets.<d>.root` in a stage's deps (it has no nested interpolation), so the
`raw_manifest` stage lists the tree on every `dvc repro` and its file changes only when the tree does:
adding, removing or replacing an image reruns `prepare`, and only what the prepared cache changes
after it. A stat per file, as make and Snakemake judge files: milliseconds on CUB's 12k images, where
hashing the pixels would read gigabytes. A file touched but not changed reruns `prepare` alone (its
cache comes out byte-identical, so nothing after it reruns).
"""

from __future__ import annotations

import os
from pathlib import Path

from finesyn.config import DatasetConfig, ParamsError
from finesyn.io import atomic_write_text

HEADER = "path\tsize\tmtime_ns\n"


def raw_manifest(dataset: str, cfg: DatasetConfig) -> str:
    """The manifest text of a dataset's root (and its unlabelled_root, as `unlabelled_root/<path>`): sorted,
    root-relative, links followed (a dangling one is listed with size -1, so that giving it a target reruns prepare)."""
    if cfg.kind == "synthetic":
        return f"# {dataset}: generated from datasets.{dataset}, no raw files (prepare depends on those params)\n"
    trees = {"root": ("", cfg.root), "unlabelled_root": ("unlabelled_root/", cfg.unlabelled_root)}
    rows = []
    for key, (prefix, root) in trees.items():
        if root is None:
            continue
        if not Path(root).is_dir():
            raise ParamsError(f"datasets.{dataset}.{key}: directory {str(root)!r} does not exist")
        rows += [(prefix + rel, size, mtime) for rel, size, mtime in _files(Path(root))]
    return HEADER + "".join(f"{rel}\t{size}\t{mtime}\n" for rel, size, mtime in sorted(rows))


def _files(root: Path):
    seen: set[tuple[int, int]] = set()  # (device, inode) of every directory walked: a link cycle is walked once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in filenames:
            path = Path(dirpath) / name
            try:
                stat = path.stat()
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:
                size = mtime = -1
            yield path.relative_to(root).as_posix(), size, mtime


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` unless the file holds it already (its date then still says when the tree last changed,
    which is what Snakemake, running this at parse time, judges by). True if written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True

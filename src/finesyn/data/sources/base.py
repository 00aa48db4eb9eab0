"""Common types and checks for the dataset indexers.

An indexer reads the *annotation files* of a dataset in its official on-disk layout and
returns a :class:`DatasetIndex` (classes + one :class:`IndexedImage` per image). It does not
decode images: that happens once, in :func:`finesyn.data.cache.prepare_from_index`, which
reports unreadable images by path.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from finesyn.errors import UserError

__all__ = [
    "Split",
    "SPLITS",
    "IMAGE_EXTENSIONS",
    "IndexedImage",
    "DatasetIndex",
    "DatasetLayoutError",
    "DatasetCountWarning",
    "require_file",
    "require_dir",
    "read_lines",
    "finalize_index",
    "find_root",
    "layout_error",
    "counts_dict",
]

Split = Literal["train", "test", "unlabelled"]  # unlabelled: label -1, pretraining only (sources/unlabelled.py)
SPLITS: tuple[str, str] = ("train", "test")  # the labelled splits
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class DatasetLayoutError(UserError, ValueError):
    """The files on disk do not match the layout the indexer expects.

    The message names the offending file or directory, describes the expected layout and
    says where the dataset comes from.
    """


class DatasetCountWarning(UserWarning):
    """Class count or split sizes differ from the official ones (an error with strict=True)."""


@dataclass(frozen=True)
class IndexedImage:
    path: Path  # absolute path of the image file
    label: int  # 0-based index into DatasetIndex.classes
    split: Split  # "train" | "test" | "unlabelled"
    id: str  # stable identifier, unique within the dataset


@dataclass
class DatasetIndex:
    name: str
    classes: list[str]
    items: list[IndexedImage]
    # Official {"classes": C, "train": n, "test": n} or None when there is no official split.
    expected_counts: dict[str, int] | None = None
    kind: str = ""
    root: Path | None = None  # dataset root; manifest sources are relative to it

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        c = Counter(it.split for it in self.items)
        return {"classes": len(self.classes), "train": c.get("train", 0), "test": c.get("test", 0)}

    def split(self, split: Split) -> list[IndexedImage]:
        return [it for it in self.items if it.split == split]

    def relative_source(self, item: IndexedImage) -> str:
        """Path of ``item`` relative to the dataset root (POSIX), or absolute if outside it."""
        if self.root is not None:
            try:
                return item.path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return item.path.as_posix()


# --------------------------------------------------------------------------- helpers


def _layout_msg(problem: str, layout: str, origin: str) -> str:
    return f"{problem}\nExpected layout:\n{layout.rstrip()}\nSource: {origin}"


def require_file(path: Path, layout: str, origin: str, what: str = "annotation file") -> Path:
    if not path.is_file():
        problem = f"missing {what}: {path}" if not path.exists() else f"{what} is not a regular file: {path}"
        raise DatasetLayoutError(_layout_msg(problem, layout, origin))
    return path


def require_dir(path: Path, layout: str, origin: str, what: str = "directory") -> Path:
    if not path.is_dir():
        problem = f"missing {what}: {path}" if not path.exists() else f"{what} is not a directory: {path}"
        raise DatasetLayoutError(_layout_msg(problem, layout, origin))
    return path


def layout_error(problem: str, layout: str, origin: str) -> DatasetLayoutError:
    return DatasetLayoutError(_layout_msg(problem, layout, origin))


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty stripped lines of a text annotation file, with 1-based line numbers."""
    with open(path, encoding="utf-8") as f:
        return [(i, s) for i, line in enumerate(f, 1) if (s := line.strip())]


def _fmt_paths(paths: Iterable[object], limit: int = 20) -> str:
    paths = list(paths)
    shown = "\n".join(f"  {p}" for p in paths[:limit])
    more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
    return shown + more


def finalize_index(index: DatasetIndex, *, strict: bool, layout: str, origin: str, check_files: bool = True) -> DatasetIndex:
    """Validate an index built by an indexer.

    Errors (always): duplicate ids, labels out of range, missing image files, classes without
    any image. Warnings (errors with ``strict=True``): a class absent from one split, class
    count or split sizes different from ``index.expected_counts``.
    """
    n_cls = len(index.classes)
    if n_cls == 0:
        raise layout_error(f"no classes found for {index.kind} dataset at {index.root}", layout, origin)
    dup_cls = [c for c, k in Counter(index.classes).items() if k > 1]
    if dup_cls:
        raise layout_error(f"duplicate class names in {index.root}: {dup_cls[:10]}", layout, origin)
    dup_ids = [i for i, k in Counter(it.id for it in index.items).items() if k > 1]
    if dup_ids:
        raise layout_error(f"duplicate image ids in {index.root}: {dup_ids[:10]}", layout, origin)
    bad_lbl = [it for it in index.items if not 0 <= it.label < n_cls]
    if bad_lbl:
        raise layout_error(f"{len(bad_lbl)} image(s) have labels outside [0, {n_cls}), e.g. {bad_lbl[0]}", layout, origin)
    if check_files:
        missing = [it.path for it in index.items if not it.path.is_file()]
        if missing:
            raise layout_error(
                f"{len(missing)} image file(s) listed in the annotations are missing:\n" + _fmt_paths(missing), layout, origin
            )

    per_split = {s: Counter(it.label for it in index.items if it.split == s) for s in SPLITS}
    empty = [index.classes[c] for c in range(n_cls) if per_split["train"][c] == 0 and per_split["test"][c] == 0]
    if empty:
        raise layout_error(f"{len(empty)} class(es) have no images in {index.root}: {empty[:20]}", layout, origin)

    problems: list[str] = []
    for s in SPLITS:
        if not per_split[s]:
            continue  # a dataset with no test split at all is reported by the count check
        absent = [index.classes[c] for c in range(n_cls) if per_split[s][c] == 0]
        if absent:
            problems.append(f"{len(absent)} class(es) have no {s} images: {absent[:10]}")
    exp = index.expected_counts
    if exp is not None:
        got = index.counts()
        diff = {k: (got[k], v) for k, v in exp.items() if got.get(k) != v}
        if diff:
            problems.append(
                f"{index.name} at {index.root} differs from the official counts "
                + ", ".join(f"{k}: found {g}, official {e}" for k, (g, e) in diff.items())
                + " (incomplete copy, or a different version of the dataset?)"
            )
    for p in problems:
        if strict:
            raise layout_error(p, layout, origin)
        warnings.warn(p, DatasetCountWarning, stacklevel=3)
    return index


def find_root(root: Path, marker: str, wrapper: str) -> Path:
    """Accept either the dataset directory itself or its parent holding ``wrapper/``.

    ``marker`` is a relative path that identifies the dataset directory.
    """
    root = Path(root).expanduser().resolve()
    if not (root / marker).exists() and (root / wrapper / marker).exists():
        return root / wrapper
    return root


def counts_dict(classes: int, train: int, test: int) -> dict[str, int]:
    return {"classes": classes, "train": train, "test": test}

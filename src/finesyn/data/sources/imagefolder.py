"""A generic class-per-directory dataset.

Two layouts:

* pre-split: ``root/train/<class>/**/<image>`` and ``root/test/<class>/**/<image>``;
* single: ``root/<class>/**/<image>`` plus ``split_ratio`` (fraction of each class that goes
  to *train*) and ``split_seed``. The split is stratified and deterministic: each class is
  shuffled with its own RNG seeded from ``(split_seed, class name)``, so it does not depend on
  file-system order, on the process, or on which other classes exist.

Classes are the sorted directory names (as in ``torchvision.datasets.ImageFolder``); images
are found recursively and recognised by extension; hidden files/directories are ignored.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from .base import (
    IMAGE_EXTENSIONS,
    DatasetIndex,
    IndexedImage,
    Split,
    finalize_index,
    layout_error,
    require_dir,
)

LAYOUT = (
    """\
  <root>/train/<class>/<image>  and  <root>/test/<class>/<image>      (pre-split), or
  <root>/<class>/<image>   with split_ratio=<train fraction> and split_seed   (split here)
  images: """
    + ", ".join(sorted(IMAGE_EXTENSIONS))
    + "\n"
)
ORIGIN = "any class-per-directory image collection (torchvision ImageFolder convention)"


def _class_dirs(parent: Path) -> list[Path]:
    return sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def image_files(directory: Path) -> list[Path]:
    """The image files under `directory` (recursive, by extension, hidden parts skipped), sorted by relative path;
    links to missing files are left out with a warning that counts them."""
    named = [
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    ]
    found = [p for p in named if p.is_file()]
    dangling = [p for p in named if p.is_symlink() and not p.exists()]
    if dangling:
        warnings.warn(
            f"{len(dangling)} image link(s) in {directory} point to missing files and are not indexed, e.g. {dangling[0]} -> {dangling[0].readlink()}",
            UserWarning,
            stacklevel=3,
        )
    return sorted(found, key=lambda p: p.relative_to(directory).as_posix())


def _images(class_dir: Path) -> list[Path]:
    found = image_files(class_dir)
    if not found:
        raise layout_error(f"empty class directory (no image files): {class_dir}", LAYOUT, ORIGIN)
    return found


def _split_class(n: int, ratio: float, seed: int, class_name: str) -> list[bool]:
    """is_train flags for the n (sorted) images of one class."""
    if n == 1:
        return [True]
    n_train = min(max(round(n * ratio), 1), n - 1)
    order = list(range(n))
    random.Random(f"finesyn-imagefolder-split:{seed}:{class_name}").shuffle(order)
    train = set(order[:n_train])
    return [i in train for i in range(n)]


def index_imagefolder(
    root: str | Path,
    *,
    split_ratio: float | None = None,
    split_seed: int = 0,
    name: str | None = None,
    expected_counts: dict[str, int] | None = None,
    strict: bool = False,
    check_files: bool = True,
) -> DatasetIndex:
    root = Path(root).expanduser().resolve()
    require_dir(root, LAYOUT, ORIGIN, "dataset root")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    items: list[IndexedImage] = []

    def rel_id(p: Path) -> str:
        return p.relative_to(root).as_posix()

    if has_train or has_test:
        if not (has_train and has_test):
            missing = root / ("test" if has_train else "train")
            raise layout_error(f"pre-split layout with only one split: missing {missing}", LAYOUT, ORIGIN)
        if split_ratio is not None:
            warnings.warn(f"{root} is already split into train/ and test/; split_ratio={split_ratio} is ignored", UserWarning, stacklevel=2)
        per_split: dict[Split, list[Path]] = {s: _class_dirs(root / s) for s in ("train", "test")}
        classes = sorted({d.name for dirs in per_split.values() for d in dirs})
        cidx = {c: i for i, c in enumerate(classes)}
        for split, dirs in per_split.items():
            for d in dirs:
                items += [IndexedImage(path=p, label=cidx[d.name], split=split, id=rel_id(p)) for p in _images(d)]
    else:
        dirs = _class_dirs(root)
        if not dirs:
            raise layout_error(f"no class directories in {root}", LAYOUT, ORIGIN)
        if split_ratio is None:
            raise layout_error(
                f"{root} has no train/ and test/ subdirectories; set datasets.<name>.split_ratio in params.yaml "
                "(fraction of each class used for training; split_seed picks the split) to split it",
                LAYOUT,
                ORIGIN,
            )
        if not 0.0 < split_ratio < 1.0:
            raise ValueError(f"split_ratio must be in (0, 1), got {split_ratio}")
        classes = [d.name for d in dirs]
        for label, d in enumerate(dirs):
            paths = _images(d)
            flags = _split_class(len(paths), split_ratio, int(split_seed), d.name)
            items += [IndexedImage(path=p, label=label, split="train" if t else "test", id=rel_id(p)) for p, t in zip(paths, flags)]
    index = DatasetIndex(
        name=name or root.name,
        classes=classes,
        items=items,
        expected_counts=dict(expected_counts) if expected_counts else None,
        kind="imagefolder",
        root=root,
    )
    return finalize_index(index, strict=strict, layout=LAYOUT, origin=ORIGIN, check_files=check_files)

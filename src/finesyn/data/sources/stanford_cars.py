"""Stanford Cars in the layout torchvision's ``StanfordCars`` expects.

The parsing mirrors ``torchvision.datasets.StanfordCars.__init__`` (torchvision 0.29):
``scipy.io.loadmat(<annos>, squeeze_me=True)["annotations"]`` records with fields ``fname`` and
``class`` (1-based), and ``loadmat(devkit/cars_meta.mat, squeeze_me=True)["class_names"]``.
It is reimplemented rather than called so that layout problems give precise errors and
indexing does not import torch; ``tests/test_sources.py`` checks it agrees with torchvision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    DatasetIndex,
    IndexedImage,
    Split,
    counts_dict,
    finalize_index,
    find_root,
    layout_error,
    require_dir,
    require_file,
)

NAME = "Stanford Cars"
EXPECTED = counts_dict(196, 8144, 8041)
LAYOUT = """\
  <root>/                              (the stanford_cars/ directory, or its parent)
    devkit/cars_meta.mat               class_names (196)
    devkit/cars_train_annos.mat        annotations: fname, class (1-based), bbox_*
    cars_test_annos_withlabels.mat     annotations for the test set *with* class labels
    cars_train/<fname>.jpg
    cars_test/<fname>.jpg
"""
ORIGIN = (
    "Stanford Cars (Krause et al., 3dRR 2013). The original URL "
    "https://ai.stanford.edu/~jkrause/cars/car_dataset.html is offline; torchvision no longer "
    "downloads it. Obtain car_devkit.tgz, cars_train.tgz, cars_test.tgz and "
    "cars_test_annos_withlabels.mat from a mirror (e.g. the Kaggle 'stanford-cars-dataset' "
    "copies) and arrange them as above (see torchvision.datasets.StanfordCars)"
)


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io as sio
    except ImportError:  # pragma: no cover - scipy is a test/runtime dependency
        raise RuntimeError("indexing Stanford Cars needs scipy (scipy.io.loadmat reads the .mat annotations): pip install scipy") from None
    try:
        return sio.loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError on junk
        raise layout_error(f"cannot read MATLAB file {path}: {type(e).__name__}: {e}", LAYOUT, ORIGIN) from e


def _annotations(path: Path) -> list[tuple[str, int]]:
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise layout_error(
            f"{path} has no 'annotations' variable (found {sorted(k for k in mat if not k.startswith('__'))})", LAYOUT, ORIGIN
        )
    annos = np.atleast_1d(mat["annotations"])
    names = annos.dtype.names or ()
    for field in ("fname", "class"):
        if field not in names:
            hint = (
                " (this looks like the unlabeled devkit/cars_test_annos.mat; the test labels are in cars_test_annos_withlabels.mat)"
                if field == "class"
                else ""
            )
            raise layout_error(f"{path}: annotations have no '{field}' field{hint}", LAYOUT, ORIGIN)
    return [(str(a["fname"]), int(a["class"])) for a in annos]


def index_stanford_cars(root: str | Path, *, strict: bool = False, check_files: bool = True) -> DatasetIndex:
    root = find_root(Path(root), "devkit", "stanford_cars")
    require_dir(root, LAYOUT, ORIGIN, "dataset root")
    devkit = require_dir(root / "devkit", LAYOUT, ORIGIN, "devkit directory")
    meta_path = require_file(devkit / "cars_meta.mat", LAYOUT, ORIGIN)
    sources: dict[Split, tuple[Path, Path]] = {
        "train": (
            require_file(devkit / "cars_train_annos.mat", LAYOUT, ORIGIN),
            require_dir(root / "cars_train", LAYOUT, ORIGIN, "image directory"),
        ),
        "test": (
            require_file(root / "cars_test_annos_withlabels.mat", LAYOUT, ORIGIN),
            require_dir(root / "cars_test", LAYOUT, ORIGIN, "image directory"),
        ),
    }

    meta = _loadmat(meta_path)
    if "class_names" not in meta:
        raise layout_error(f"{meta_path} has no 'class_names' variable", LAYOUT, ORIGIN)
    classes = [str(c) for c in np.atleast_1d(meta["class_names"]).tolist()]

    items = []
    for split, (anno_path, img_dir) in sources.items():
        for fname, cls in _annotations(anno_path):
            if not 1 <= cls <= len(classes):
                raise layout_error(
                    f"{anno_path}: {fname}: class {cls} is not in 1..{len(classes)} (classes from {meta_path})", LAYOUT, ORIGIN
                )
            items.append(IndexedImage(path=img_dir / fname, label=cls - 1, split=split, id=f"{split}/{Path(fname).stem}"))
    index = DatasetIndex(name=NAME, classes=classes, items=items, expected_counts=dict(EXPECTED), kind="stanford_cars", root=root)
    return finalize_index(index, strict=strict, layout=LAYOUT, origin=ORIGIN, check_files=check_files)

"""FGVC-Aircraft 2013b at *variant* level (100 classes); train = the official ``trainval`` split.

The parsing mirrors ``torchvision.datasets.FGVCAircraft(split=..., annotation_level="variant")``
(torchvision 0.29): classes are the stripped lines of ``data/variants.txt`` in file order, and
each line of ``data/images_variant_<split>.txt`` is ``"<image_name> <variant name>"`` split at
the first space (variant names contain spaces and slashes, e.g. ``F/A-18``), with the image at
``data/images/<image_name>.jpg``. ``tests/test_sources.py`` checks it agrees with torchvision.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    DatasetIndex,
    IndexedImage,
    Split,
    counts_dict,
    finalize_index,
    find_root,
    layout_error,
    read_lines,
    require_dir,
    require_file,
)

NAME = "FGVC-Aircraft"
EXPECTED = counts_dict(100, 6667, 3333)
SPLIT_FILES: dict[Split, str] = {"train": "images_variant_trainval.txt", "test": "images_variant_test.txt"}
LAYOUT = """\
  <root>/                                  (the fgvc-aircraft-2013b/ directory, or its parent)
    data/variants.txt                      one variant name per line (100)
    data/images_variant_trainval.txt       "<image_name> <variant>"  (6,667 lines; used as train)
    data/images_variant_test.txt           "<image_name> <variant>"  (3,333 lines)
    data/images/<image_name>.jpg
"""
ORIGIN = (
    "FGVC-Aircraft (Maji et al., 2013), "
    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz "
    "(the layout torchvision.datasets.FGVCAircraft downloads)"
)


def index_fgvc_aircraft(root: str | Path, *, strict: bool = False, check_files: bool = True) -> DatasetIndex:
    root = find_root(Path(root), "data", "fgvc-aircraft-2013b")
    require_dir(root, LAYOUT, ORIGIN, "dataset root")
    data = require_dir(root / "data", LAYOUT, ORIGIN, "data directory")
    variants_path = require_file(data / "variants.txt", LAYOUT, ORIGIN)
    split_paths = {s: require_file(data / f, LAYOUT, ORIGIN) for s, f in SPLIT_FILES.items()}
    images_dir = require_dir(data / "images", LAYOUT, ORIGIN, "image directory")

    classes = [line for _, line in read_lines(variants_path)]
    class_to_idx = {c: i for i, c in enumerate(classes)}

    items = []
    for split, path in split_paths.items():
        for lineno, line in read_lines(path):
            parts = line.split(" ", 1)
            if len(parts) != 2:
                raise layout_error(f"{path}:{lineno}: expected '<image_name> <variant>', got {line!r}", LAYOUT, ORIGIN)
            name, variant = parts[0], parts[1].strip()
            if variant not in class_to_idx:
                raise layout_error(f"{path}:{lineno}: variant {variant!r} is not listed in {variants_path}", LAYOUT, ORIGIN)
            items.append(IndexedImage(path=images_dir / f"{name}.jpg", label=class_to_idx[variant], split=split, id=name))
    index = DatasetIndex(name=NAME, classes=classes, items=items, expected_counts=dict(EXPECTED), kind="fgvc_aircraft", root=root)
    return finalize_index(index, strict=strict, layout=LAYOUT, origin=ORIGIN, check_files=check_files)

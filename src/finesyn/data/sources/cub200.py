"""CUB-200-2011 in its official layout (the ``CUB_200_2011/`` directory of CUB_200_2011.tgz)."""

from __future__ import annotations

from pathlib import Path

from .base import (
    DatasetIndex,
    IndexedImage,
    counts_dict,
    finalize_index,
    find_root,
    layout_error,
    read_lines,
    require_dir,
    require_file,
)

NAME = "CUB-200-2011"
EXPECTED = counts_dict(200, 5994, 5794)
LAYOUT = """\
  <root>/                      (the CUB_200_2011/ directory, or its parent)
    images.txt                 "<image_id> <relative/path.jpg>"
    image_class_labels.txt     "<image_id> <class_id>"      (class ids 1..200)
    train_test_split.txt       "<image_id> <is_training_image 1|0>"
    classes.txt                "<class_id> <class_name>"
    images/<class_name>/<file>.jpg
"""
ORIGIN = (
    "Caltech-UCSD Birds-200-2011, https://www.vision.caltech.edu/datasets/cub_200_2011/ "
    "(CUB_200_2011.tgz, also at https://data.caltech.edu/records/65de6-vp158); "
    "extract it and point the root at CUB_200_2011/"
)


def _parse_pairs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in read_lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise layout_error(f"{path}:{lineno}: expected '<id> <value>', got {line!r}", LAYOUT, ORIGIN)
        key, value = parts
        if key in out:
            raise layout_error(f"{path}:{lineno}: duplicate id {key!r}", LAYOUT, ORIGIN)
        out[key] = value
    return out


def _int(value: str, path: Path, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise layout_error(f"{path}: id {key}: expected an integer, got {value!r}", LAYOUT, ORIGIN) from None


def index_cub200(root: str | Path, *, strict: bool = False, check_files: bool = True) -> DatasetIndex:
    root = find_root(Path(root), "images.txt", "CUB_200_2011")
    require_dir(root, LAYOUT, ORIGIN, "dataset root")
    files = {
        n: require_file(root / n, LAYOUT, ORIGIN) for n in ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt")
    }
    images_dir = require_dir(root / "images", LAYOUT, ORIGIN, "image directory")

    cls_rows = _parse_pairs(files["classes.txt"])
    cls_ids = sorted(_int(k, files["classes.txt"], k) for k in cls_rows)
    if cls_ids != list(range(1, len(cls_ids) + 1)):
        raise layout_error(f"{files['classes.txt']}: class ids must be 1..{len(cls_ids)} without gaps", LAYOUT, ORIGIN)
    classes = [cls_rows[str(i)] for i in cls_ids]

    images = _parse_pairs(files["images.txt"])
    labels = _parse_pairs(files["image_class_labels.txt"])
    is_train = _parse_pairs(files["train_test_split.txt"])
    for fname, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        missing = [k for k in images if k not in table]
        extra = [k for k in table if k not in images]
        if missing or extra:
            raise layout_error(
                f"{files[fname]} does not match images.txt: "
                f"{len(missing)} image id(s) without an entry (e.g. {missing[:5]}), "
                f"{len(extra)} unknown id(s) (e.g. {extra[:5]})",
                LAYOUT,
                ORIGIN,
            )

    items = []
    for key, rel in images.items():
        label = _int(labels[key], files["image_class_labels.txt"], key)
        if not 1 <= label <= len(classes):
            raise layout_error(f"{files['image_class_labels.txt']}: id {key}: class {label} is not in 1..{len(classes)}", LAYOUT, ORIGIN)
        flag = is_train[key]
        if flag not in ("0", "1"):
            raise layout_error(f"{files['train_test_split.txt']}: id {key}: expected 1 or 0, got {flag!r}", LAYOUT, ORIGIN)
        items.append(IndexedImage(path=images_dir / rel, label=label - 1, split="train" if flag == "1" else "test", id=key))
    index = DatasetIndex(name=NAME, classes=classes, items=items, expected_counts=dict(EXPECTED), kind="cub200", root=root)
    return finalize_index(index, strict=strict, layout=LAYOUT, origin=ORIGIN, check_files=check_files)

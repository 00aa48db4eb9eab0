"""A folder of unlabelled images (`datasets.<d>.unlabelled_root`): more images for the SSL methods to pretrain on.

Most of a researcher's own images carry no label. They join the pretraining of the label-free methods; the
labelled dataset's train and test splits stay what the supervised reference, the probe and retrieval read.
Every image file under the folder counts, in any sub-folder layout (hidden files and folders are ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .base import IMAGE_EXTENSIONS, IndexedImage, layout_error, require_dir
from .imagefolder import image_files

UNLABELLED: Final = "unlabelled"  # the split name of these images in the prepared cache; their label is -1
LAYOUT = "  <unlabelled_root>/**/<image>   (any sub-folders)\n  images: " + ", ".join(sorted(IMAGE_EXTENSIONS)) + "\n"
ORIGIN = "your own images without labels"


def index_unlabelled(root: Path) -> list[IndexedImage]:
    """Every image under `root`, sorted, as items of split 'unlabelled' with label -1 and id `unlabelled/<path>`."""
    require_dir(root, LAYOUT, ORIGIN, "unlabelled image folder")
    paths = image_files(root)
    if not paths:
        raise layout_error(f"no image files under the unlabelled image folder {root}", LAYOUT, ORIGIN)
    return [IndexedImage(p, -1, UNLABELLED, f"{UNLABELLED}/{p.relative_to(root).as_posix()}") for p in paths]

"""Tiny dataset trees in the official on-disk layouts, for tests.

Every builder writes under ``tmp`` and returns a :class:`FixtureTree` describing what an
indexer should find: the dataset root, the classes and the expected items (in the order the
indexer lists them). Images are small, deterministic, structured (gradients + noise) so that
resizing is non-trivial, and deliberately varied in size, orientation and mode.

Usage::

    from fixtures import make_cub_tree
    tree = make_cub_tree(tmp_path)
    index = index_dataset("cub200", tree.root)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "ExpectedItem",
    "FixtureTree",
    "write_image",
    "make_cub_tree",
    "make_cars_tree",
    "make_aircraft_tree",
    "make_imagefolder_tree",
    "make_flat_jpegs",
    "truncate_file",
    "write_garbage",
]

# (width, height) cycle: landscape, portrait, square, odd sizes
SIZES = [(40, 30), (30, 44), (36, 36), (53, 31), (27, 41)]


@dataclass(frozen=True)
class ExpectedItem:
    path: Path
    label: int
    split: str
    id: str


@dataclass
class FixtureTree:
    root: Path  # what to pass to the indexer
    classes: list[str]
    items: list[ExpectedItem] = field(default_factory=list)

    def paths(self, split: str | None = None) -> list[Path]:
        return [it.path for it in self.items if split is None or it.split == split]


def _pixels(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 127 + 127 * np.sin((x + y) / (3 + seed % 5))], axis=-1)
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, mode: str = "RGB", quality: int = 90) -> Path:
    """Write a deterministic test image; the format follows the suffix (.jpg/.png/...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(_pixels(*size, seed))
    if mode == "L":
        img = img.convert("L")
    elif mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(_pixels(*size, seed + 1)[..., 0]))
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=quality)
    else:
        img.save(path)
    return path


def truncate_file(path: Path, keep: float = 0.5) -> Path:
    """Cut an image file short (a truncated download)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def write_garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image\n" * 10)
    return path


def _seed(*parts: object) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate("/".join(map(str, parts)))) % 100_000


# --------------------------------------------------------------------------- CUB-200-2011


def make_cub_tree(tmp: Path, n_classes: int = 3, n_train: int = 2, n_test: int = 1, wrapper: bool = True) -> FixtureTree:
    """``tmp/CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt,
    classes.txt, images/NNN.Name/Name_XXXX_Y.jpg}`` (ids interleave train and test)."""
    root = tmp / "CUB_200_2011" if wrapper else tmp
    classes = [f"{c + 1:03d}.Bird_{chr(65 + c)}" for c in range(n_classes)]
    lines = {k: [] for k in ("images", "labels", "split", "classes")}
    items = []
    image_id = 0
    # interleave train/test flags within each class: T, F, T, F, ... then the remainder
    flags: list[bool] = []
    a, b = n_train, n_test
    while a or b:
        if a:
            flags.append(True)
            a -= 1
        if b:
            flags.append(False)
            b -= 1
    for c, cname in enumerate(classes):
        lines["classes"].append(f"{c + 1} {cname}")
        for j in range(n_train + n_test):
            image_id += 1
            is_train = flags[j]
            rel = f"{cname}/{cname.split('.', 1)[1]}_{image_id:04d}_{j}.jpg"
            write_image(root / "images" / rel, SIZES[image_id % len(SIZES)], _seed("cub", rel))
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {1 if is_train else 0}")
            items.append(ExpectedItem(root / "images" / rel, c, "train" if is_train else "test", str(image_id)))
    for key, fname in (
        ("images", "images.txt"),
        ("labels", "image_class_labels.txt"),
        ("split", "train_test_split.txt"),
        ("classes", "classes.txt"),
    ):
        (root / fname).write_text("\n".join(lines[key]) + "\n")
    tree = FixtureTree(root=root, classes=classes, items=items)
    # sanity: the flag rule above must give exactly n_train / n_test per class
    for c in range(n_classes):
        got = [it.split for it in items if it.label == c]
        assert got.count("train") == n_train and got.count("test") == n_test, got
    return tree


# --------------------------------------------------------------------------- Stanford Cars


def _struct_array(records: list[dict[str, object]]) -> np.ndarray:
    names = list(records[0])
    arr = np.zeros((1, len(records)), dtype=[(n, "O") for n in names])
    for i, r in enumerate(records):
        for n in names:
            arr[0, i][n] = r[n]
    return arr


def write_cars_annotations(path: Path, entries: list[tuple[str, int]], with_class: bool = True) -> Path:
    """A ``cars_*_annos*.mat`` file: struct array ``annotations`` (bbox_x1..y2, class, fname)."""
    from scipy.io import savemat

    recs = []
    for fname, cls in entries:
        r: dict[str, object] = {"bbox_x1": np.uint16(1), "bbox_y1": np.uint16(2), "bbox_x2": np.uint16(20), "bbox_y2": np.uint16(15)}
        if with_class:
            r["class"] = np.uint8(cls)
        r["fname"] = fname
        recs.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"annotations": _struct_array(recs)})
    return path


def make_cars_tree(tmp: Path, n_classes: int = 3, n_train: int = 2, n_test: int = 2, wrapper: bool = True) -> FixtureTree:
    """``tmp/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat, cars_train/NNNNN.jpg, cars_test/NNNNN.jpg}`` — the layout of
    torchvision.datasets.StanfordCars (root = tmp). Train and test file names overlap, as in the
    real dataset; annotations are not sorted by class."""
    from scipy.io import savemat

    root = tmp / "stanford_cars" if wrapper else tmp
    classes = [f"Make{c} Model/{c} 20{10 + c}" for c in range(n_classes)]
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array(classes, dtype=object).reshape(1, -1)})
    items = []
    for split, per, anno in (
        ("train", n_train, root / "devkit" / "cars_train_annos.mat"),
        ("test", n_test, root / "cars_test_annos_withlabels.mat"),
    ):
        entries = []
        k = 0
        for j in range(per):
            for c in range(n_classes):
                k += 1
                cls = (c + j) % n_classes  # interleaved labels
                fname = f"{k:05d}.jpg"
                p = write_image(root / f"cars_{split}" / fname, SIZES[k % len(SIZES)], _seed("cars", split, fname))
                entries.append((fname, cls + 1))
                items.append(ExpectedItem(p, cls, split, f"{split}/{k:05d}"))
        write_cars_annotations(anno, entries)
    return FixtureTree(root=root, classes=classes, items=items)


# --------------------------------------------------------------------------- FGVC-Aircraft

AIRCRAFT_VARIANTS = ["707-320", "A300B4", "F/A-18", "Boeing 717", "DHC-8-100", "Tu-154"]


def make_aircraft_tree(tmp: Path, n_classes: int = 3, n_trainval: int = 2, n_test: int = 1, wrapper: bool = True) -> FixtureTree:
    """``tmp/fgvc-aircraft-2013b/data/{variants.txt, images_variant_trainval.txt,
    images_variant_test.txt, images/NNNNNNN.jpg}`` (root = tmp for torchvision.FGVCAircraft).
    Variant names include spaces and slashes, as in the real file; family/manufacturer files are
    written too (with different class counts) so a wrong annotation level would show."""
    root = tmp / "fgvc-aircraft-2013b" if wrapper else tmp
    data = root / "data"
    classes = AIRCRAFT_VARIANTS[:n_classes]
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(classes) + "\n")
    (data / "families.txt").write_text("Family A\n")
    (data / "manufacturers.txt").write_text("Maker A\n")
    items = []
    k = 1_000_000
    for split, fname, per in (("train", "images_variant_trainval.txt", n_trainval), ("test", "images_variant_test.txt", n_test)):
        lines, fam = [], []
        for c, variant in enumerate(classes):
            for _ in range(per):
                k += 137
                name = f"{k:07d}"
                p = write_image(data / "images" / f"{name}.jpg", (SIZES[k % 5][0], SIZES[k % 5][1] + 20), _seed("air", name))
                lines.append(f"{name} {variant}")
                fam.append(f"{name} Family A")
                items.append(ExpectedItem(p, c, split, name))
        (data / fname).write_text("\n".join(lines) + "\n")
        (data / fname.replace("variant", "family")).write_text("\n".join(fam) + "\n")
    return FixtureTree(root=root, classes=classes, items=items)


# --------------------------------------------------------------------------- ImageFolder

_IF_KINDS = [(".jpg", "RGB"), (".png", "RGB"), (".png", "L"), (".png", "RGBA"), (".jpeg", "RGB"), (".png", "P")]


def make_imagefolder_tree(
    tmp: Path, classes: tuple[str, ...] = ("alpha", "beta", "gamma"), per_class: int = 3, presplit: bool = True, n_test: int = 1
) -> FixtureTree:
    """``tmp/ds/{train,test}/<class>/img*.ext`` (presplit) or ``tmp/ds/<class>/img*.ext``.

    Mixed formats and modes (JPEG, PNG in RGB / L / RGBA / P). For the single layout, the
    expected items carry ``split=""`` (the split is decided by the indexer)."""
    root = tmp / "ds"
    items = []
    k = 0
    for split in ("train", "test") if presplit else ("",):
        for c, cname in enumerate(classes):
            n = per_class if not presplit else (per_class - n_test if split == "train" else n_test)
            for j in range(n):
                ext, mode = _IF_KINDS[k % len(_IF_KINDS)]
                k += 1
                rel = Path(split) / cname / f"img{j}{ext}" if split else Path(cname) / f"img{j}{ext}"
                p = write_image(root / rel, SIZES[k % len(SIZES)], _seed("if", rel), mode=mode)
                items.append(ExpectedItem(p, c, split, rel.as_posix()))
    if presplit:
        items.sort(key=lambda it: (it.split != "train", it.label, it.id))
    return FixtureTree(root=root, classes=list(classes), items=items)


def make_flat_jpegs(root: Path, n: int, size: tuple[int, int] = (400, 300), n_classes: int = 10, quality: int = 90) -> Path:
    """``root/<class>/*.jpg`` (single ImageFolder layout), e.g. for throughput measurements."""
    for i in range(n):
        write_image(root / f"c{i % n_classes:02d}" / f"{i:05d}.jpg", size, seed=i, quality=quality)
    return root


def write_png16(path: Path, a: np.ndarray, sbit: int | None = None) -> Path:
    """A 16-bit PNG of ``a`` (uint16, HxW grey or HxWx3 RGB), written byte by byte so the test does
    not depend on how PIL encodes high bit depths; `sbit` adds the chunk declaring the significant bits."""
    import struct
    import zlib

    h, w = a.shape[:2]
    colour_type = 0 if a.ndim == 2 else 2
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    declared = chunk(b"sBIT", bytes([sbit] * (1 if a.ndim == 2 else 3))) if sbit else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + declared + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path

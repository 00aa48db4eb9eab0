"""A second fine-grained dataset from real material that ships offline with scikit-learn: the real handwritten
digits of `load_digits()` (UCI optdigits, 8x8) drawn small onto random crops of its two real photographs
(`load_sample_images()`). The class (0-9) lives only in the digit's stroke shape; the nuisance (photo crop, its
scale and position, lighting, the digit's colour, place, size and rotation) carries most of the pixel variance,
as in the generated default (src/finesyn/data/synthetic.py), but from real images instead of that generator.

    python -m studies.digits_photos --out data/raw/digits_photos [--seed 0] [--grid grid.png]

writes the pre-split imagefolder layout that the `imagefolder` source reads (<out>/{train,test}/<digit>/*.png,
64x64 RGB) plus README.txt and build.json. The split is by source digit, so no handwritten instance is in both
splits: train takes the source indices before SPLIT_INDEX, test the rest (see there). Every image comes from its
own numpy Generator seeded by (seed, split, source index, render): a rebuild is byte-identical on one machine.
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64  # output side (px)
CROP_SIDE = (48, 320)  # square photo crop side (px), inclusive; the photos are 640x427
DIGIT_SIDE = (14, 22)  # drawn side of the 8x8 digit (px), inclusive
MAX_ROTATION = 20.0  # degrees, either way
MIN_CONTRAST, VISIBLE, PLACE_TRIES = 0.3, 0.9, 8  # the digit shows where its ink and the photo differ by 0.3 in luminance
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# The digits file is in form order: the target sequence repeats a form's layout (0-9 three times, then ~100 digits)
# every ~130 entries, starting at 0, 130, 256, ..., 1029, 1157, 1287, ... . Train = indices < 1157 (9 forms), test =
# the last 5: 114-118 of each class's 174-183 digits (63.5-66 %) go to train, and, if a form is one writer's,
# no writer is in both splits. A per-class 2/3 cut would fall inside the form at 1157-1286.
SPLIT_INDEX = 1157
SPLITS = {"train": 0, "test": 1}  # split -> id in the per-image seed
UCI_CITATION = (
    "Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits [Dataset]. UCI Machine Learning "
    "Repository. https://doi.org/10.24432/C50P49 - licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
)


def load_material() -> tuple[np.ndarray, np.ndarray, list[Image.Image], str]:
    """(digits (1797, 8, 8) float in 0..16, targets, the two photos as PIL RGB images, sklearn's images README)."""
    from sklearn.datasets import load_digits, load_sample_images

    digits = load_digits()
    photos = load_sample_images()
    readme = Path(photos.filenames[0]).with_name("README.txt").read_text(encoding="utf-8")
    return digits.images, digits.target, [Image.fromarray(im) for im in photos.images], readme


def split_sources(targets: np.ndarray, per_class: int | None = None) -> dict[str, list[int]]:
    """Source digit indices of each split, ascending: the form-order cut at SPLIT_INDEX; with `per_class`, the
    first ~2/3 of per_class from each class's train side and the rest from its test side (small builds)."""
    out: dict[str, list[int]] = {"train": [], "test": []}
    for c in range(10):
        idx = np.flatnonzero(targets == c)
        tr, te = idx[idx < SPLIT_INDEX], idx[idx >= SPLIT_INDEX]
        if per_class is not None:
            n_tr = max(1, round(per_class * 2 / 3))
            tr, te = tr[:n_tr], te[: max(1, per_class - n_tr)]
        out["train"] += tr.tolist()
        out["test"] += te.tolist()
    return {s: sorted(v) for s, v in out.items()}


def background(rng: np.random.Generator, photos: list[Image.Image]) -> np.ndarray:
    """A random square crop of a random photo, resized to SIZE (bilinear, antialiased), maybe mirrored; (S, S, 3) in [0, 1]."""
    photo = photos[int(rng.integers(len(photos)))]
    side = int(rng.integers(CROP_SIDE[0], CROP_SIDE[1] + 1))
    x0, y0 = int(rng.integers(photo.width - side + 1)), int(rng.integers(photo.height - side + 1))
    img = np.asarray(photo.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side)), np.float32) / 255.0
    return img[:, ::-1] if rng.uniform() < 0.5 else img


def digit_alpha(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """The 8x8 digit (0..16) as an alpha mask: a zero border added, upsampled so the 8x8 spans DIGIT_SIDE px
    (bilinear), rotated by U(-MAX_ROTATION, MAX_ROTATION) degrees; (h, w) float32 in [0, 1]."""
    side = int(rng.integers(DIGIT_SIDE[0], DIGIT_SIDE[1] + 1))
    padded = np.pad(digit.astype(np.float32) / 16.0, 1)
    full = round(side * 10 / 8)
    im = Image.fromarray(padded).resize((full, full), Image.Resampling.BILINEAR)
    im = im.rotate(float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)), Image.Resampling.BILINEAR, expand=True, fillcolor=0.0)
    return np.clip(np.asarray(im, np.float32), 0.0, 1.0)


def inks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random hue moved most of the way to black, and the same hue moved as far to white (the default's marking
    colour: a random hue pushed towards whichever extreme contrasts with what lies under it)."""
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)), np.float32)
    t = np.float32(rng.uniform(0.75, 0.95))
    return base + (0.05 - base) * t, base + (0.97 - base) * t


def visible(patch: np.ndarray, alpha: np.ndarray, ink: np.ndarray) -> float:
    """Share of the digit (alpha-weighted) whose ink differs in luminance from the photo under it by >= MIN_CONTRAST."""
    diff = np.abs((patch - ink) @ LUMA)
    return float((alpha * (diff >= MIN_CONTRAST)).sum() / max(float(alpha.sum()), 1e-6))


def lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """The default's global lighting (synthetic._lighting, without sensor noise): shading gradient of random
    direction, colour cast, gain and gamma, over the whole composite; (S, S, 3) uint8."""
    gain, gamma = rng.uniform(0.65, 1.25), math.exp(rng.uniform(-0.4, 0.4))
    cast = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    amp, angle = rng.uniform(0.0, 0.45), rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    shade = 1.0 + amp * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)) * 2
    img = np.clip(img * shade[..., None] * cast, 0, 1)
    img = gain * img**gamma
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, digit: np.ndarray, photos: list[Image.Image]) -> np.ndarray:
    """One image: photo crop; the digit fully inside it at a random place, in the ink (dark or light) that it shows
    best in there (up to PLACE_TRIES places, until VISIBLE of it shows); then the lighting over the whole image."""
    img = background(rng, photos).copy()
    alpha = digit_alpha(rng, digit)
    h, w = alpha.shape
    dark, light = inks(rng)
    best = (-1.0, 0, 0, dark)
    for _ in range(PLACE_TRIES):
        y, x = int(rng.integers(SIZE - h + 1)), int(rng.integers(SIZE - w + 1))
        for ink in (dark, light):
            best = max(best, (visible(img[y : y + h, x : x + w], alpha, ink), y, x, ink), key=lambda b: b[0])
        if best[0] >= VISIBLE:
            break
    _, y, x, ink = best
    a = alpha[..., None]
    img[y : y + h, x : x + w] = img[y : y + h, x : x + w] * (1 - a) + ink * a
    return lighting(rng, img)


def ranges(values: list[int]) -> str:
    """Ascending integers as compact ranges: [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def image_digest(root: Path) -> str:
    """sha256 over every PNG under `root` in sorted relative-path order: its relative path, a NUL, its bytes."""
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return h.hexdigest()


def write_tree(tmp: Path, args: argparse.Namespace) -> dict:
    """Render every image into `tmp` (the imagefolder layout), then README.txt and build.json; returns build.json's content."""
    digits, targets, photos, photos_readme = load_material()
    sources = split_sources(targets, args.per_class)
    renders = {"train": args.train_renders, "test": args.test_renders}
    counts: dict[str, dict[str, int]] = {s: {str(c): 0 for c in range(10)} for s in SPLITS}
    for split, split_id in SPLITS.items():
        for c in range(10):
            (tmp / split / str(c)).mkdir(parents=True)
        for i in sources[split]:
            label = str(int(targets[i]))
            for r in range(renders[split]):
                rng = np.random.default_rng([args.seed, split_id, i, r])
                Image.fromarray(render(rng, digits[i], photos)).save(tmp / split / label / f"d{i:05d}_r{r}.png")
                counts[split][label] += 1
    import PIL
    import sklearn

    build = {
        "settings": {
            "seed": args.seed, "train_renders": args.train_renders, "test_renders": args.test_renders, "per_class": args.per_class,
            "image_size": SIZE, "crop_side": CROP_SIDE, "digit_side": DIGIT_SIDE, "max_rotation_deg": MAX_ROTATION,
            "split": f"train = source index < {SPLIT_INDEX}, test = the rest", "min_contrast": MIN_CONTRAST, "visible": VISIBLE, "place_tries": PLACE_TRIES,
        },
        "images": {s: sum(v.values()) for s, v in counts.items()},
        "images_per_class": counts,
        "source_digits": {s: len(v) for s, v in sources.items()},
        "source_indices": {s: ranges(v) for s, v in sources.items()},
        "versions": {"numpy": np.__version__, "pillow": PIL.__version__, "scikit-learn": sklearn.__version__, "python": sys.version.split()[0]},
        "images_sha256": image_digest(tmp),
        "images_sha256_of": "each PNG in sorted relative-path order: relative path, NUL, file bytes",
    }  # fmt: skip
    (tmp / "build.json").write_text(json.dumps(build, indent=1) + "\n", encoding="utf-8")
    (tmp / "README.txt").write_text(readme_text(build, photos_readme, args.command), encoding="utf-8")
    return build


def readme_text(build: dict, photos_readme: str, command: str) -> str:
    s, n = build["settings"], build["images"]
    return f"""digits_photos: real handwritten digits (8x8, 17 grey levels) drawn small onto crops of two real photographs.

Classes 0-9 (folder names): the digit. The class is only in the stroke shape of a {s["digit_side"][0]}-{s["digit_side"][1]} px digit
rotated up to +-{s["max_rotation_deg"]:g} degrees at a random place; the background is a random square crop ({s["crop_side"][0]}-{s["crop_side"][1]} px,
random photo, place and mirroring) resized to {SIZE}x{SIZE}; the ink is a random hue pushed towards black or white,
whichever shows more of the digit against the photo under it (and the place is redrawn, up to {PLACE_TRIES} times, until
{VISIBLE:.0%} of the digit differs from the photo by >= {MIN_CONTRAST} in luminance); a random gain, gamma, colour cast and
shading gradient then light the whole image.
Layout: train/<class>/dNNNNN_rR.png and test/<class>/dNNNNN_rR.png (NNNNN = index of the source digit in
sklearn's load_digits(), R = render); {n["train"]} train and {n["test"]} test images, {SIZE}x{SIZE} RGB PNG.
Split by source digit ({s["split"]}: the file is in form order, so this also
keeps each presumed writer's form in one split); no digit is in both splits. build.json: settings, counts, the
source indices of each split, versions and a sha256 of the images.

Made by (finesyn repository, studies/digits_photos.py):
  {command}
settings: seed={s["seed"]} train_renders={s["train_renders"]} test_renders={s["test_renders"]} per_class={s["per_class"]}

Material and licences
- Digits: sklearn.datasets.load_digits(), a copy of the test set of the UCI "Optical Recognition of Handwritten
  Digits" data set: {UCI_CITATION}
- Photographs: sklearn.datasets.load_sample_images() (china.jpg, flower.jpg). scikit-learn's
  sklearn/datasets/images/README.txt states (verbatim; its flower.jpg entry names danielbuechele but links to
  the Flickr user vultilion):

{photos_readme.strip()}
"""


def save_grid(root: Path, path: Path, per_row: int = 8, scale: int = 3) -> None:
    """One row per class: its first `per_row` train images (sorted by name), upscaled `scale` times (nearest)."""
    rows = []
    for c in range(10):
        files = sorted((root / "train" / str(c)).glob("*.png"))[:per_row]
        tiles = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        tiles += [np.zeros((SIZE, SIZE, 3), np.uint8)] * (per_row - len(tiles))
        rows.append(np.concatenate(tiles, 1))
    grid = np.concatenate(rows, 0).repeat(scale, 0).repeat(scale, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def build(args: argparse.Namespace) -> dict:
    """Write the tree to args.out atomically: into <out>.tmp-<pid>, then renamed (an old tree is replaced only with --force)."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it (it is left untouched)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    try:
        info = write_tree(tmp, args)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)  # the old tree back where it was
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.digits_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (e.g. data/raw/digits_photos)")
    p.add_argument("--seed", type=int, default=0, help="seeds every image's nuisance (default 0)")
    p.add_argument("--train-renders", type=int, default=2, help="images per train source digit (default 2)")
    p.add_argument("--test-renders", type=int, default=8, help="images per test source digit (default 8)")
    p.add_argument("--per-class", type=int, default=None, help="use only N source digits per class (~2/3 train; small builds, tests)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--grid", default=None, help="also save a PNG: one row per class, its first 8 train images, 3x")
    args = p.parse_args(argv)
    args.command = "python -m studies.digits_photos " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.train_renders < 1 or args.test_renders < 1 or (args.per_class is not None and args.per_class < 2):
        p.error("--train-renders and --test-renders must be >= 1, --per-class >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = build(args)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.grid:
        save_grid(Path(args.out), Path(args.grid))
    print(json.dumps({"out": args.out, "images": info["images"], "images_sha256": info["images_sha256"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

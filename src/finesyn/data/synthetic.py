"""The embedded, procedurally generated fine-grained dataset ("synthetic birds").

Nothing is shipped and nothing is downloaded: every image is rendered from a seed with numpy.

Design
------
Every image shows one bird-like object (body ellipse, head, beak, eye, tail, legs and a wing)
on a cluttered background. The **class is determined only by a small marking on the bird's
flank**: its *glyph* (a dot, a ring, a bar along or across the body, a "+", an "x", a pair of
dots along or across the body, a chevron pointing to the head or to the tail) and its *slot*
(near the head, near the tail, or in the middle of the flank). Glyph and slot are defined in
the bird's own frame (axis tail→head, up = back), so they turn with the bird.
A class is one (glyph, slot) combination; ``num_classes`` up to ``MAX_CLASSES`` (= 10 glyphs ×
3 slots = 30) is supported. ``class_layout(num_classes)`` says which combinations are used:
the number of slots P is 2 if ``num_classes <= 20`` else 3, the number of glyphs is
``ceil(num_classes / P)``, and class ``k`` is glyph ``k // P`` in slot ``k % P`` (so the
default 10 classes are 5 glyphs × {fore, hind}, and classes ``2j`` and ``2j+1`` differ only by
where the same glyph sits).

Equal statistics across classes: every glyph is scaled so that its area is the same
(``GLYPH_AREA`` in body units², measured numerically once), every slot lies inside the body,
and the glyph's colour is a contrast colour derived from the (random) body colour, never from
the class. So ink, area and colour statistics do not depend on the class; only the shape and
the position of the marking relative to the head do.

Nuisance factors (all independent of the class, and together they dominate pixel variance):
background = smooth multi-octave noise field mapped through a random 3-colour palette, plus
random stripes (random frequency, orientation, strength) and random blobs; object position,
scale (≈ ×1.5 range), rotation (±40°) and left/right facing; body, wing, head and beak
colours; global lighting (gain, gamma, per-channel colour cast), a linear shading gradient
of random direction and strength, and mild pixel noise. With ``background_bank`` = K > 0 the
background scene (texture, palette, stripes, blobs) is one of K shared scenes, so that clutter
varies strongly but is not a per-image signature that instance-discrimination SSL can latch on
to; lighting and the bird stay per image.

Rendering: signed-distance functions evaluated on the pixel grid, vectorised over a chunk of
images with numpy, with analytic anti-aliasing (coverage = clip(0.5 - d/pixel, 0, 1)); no
per-pixel Python loops (≈ 3 s of CPU for the default 3,000 images at 64 px). At 64 px the
body is ≈ 28-38 px long and the marking spans ≈ 6-14 px (``object_scale`` sets the size range;
(0.13, 0.20) gives 17-26 px); the dataset is meant for
``image_size >= 64`` (at 32 px the marking is only 2-5 px wide).

Every setting that decides the pixels, labels and ids is one ``GeneratorSettings`` (frozen;
``GeneratorSettings.from_config`` reads a ``datasets.<name>`` entry): ``generate_synthetic``
renders it and ``object_and_marking_masks`` reads an item's bird and marking back from it.

``python -m finesyn.data.synthetic --out grid.png`` saves a grid of examples (one row per
class).

Order and determinism
---------------------
Items are ordered **train first, then test**; inside each split, item ``i`` has label
``i % num_classes`` (classes interleaved, perfectly balanced). Item ``i`` of split ``s`` is
rendered from its own random stream seeded by ``(seed, s, i)``, so the same seed gives
byte-identical output (on a given platform and numpy version), a different seed gives
different images, and the train images do not depend on ``test_per_class``.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from finesyn.config import DatasetConfig

__all__ = [
    "GLYPHS",
    "SLOTS",
    "MAX_CLASSES",
    "GLYPH_AREA",
    "GeneratorSettings",
    "SyntheticDataset",
    "class_layout",
    "generate_synthetic",
    "object_and_marking_masks",
    "render_with_scene_of",
    "save_grid",
]

# --------------------------------------------------------------------------------------------
# Class definition: glyph × slot.
# Glyph coordinates: x along the body axis (towards the head), y towards the back; unit scale
# (they are rescaled to equal area). Each glyph is a union of capsules (segments with a radius;
# a zero-length segment is a disc) or, for the ring, an annulus.
# --------------------------------------------------------------------------------------------
_RING = "ring"
_GLYPH_DEFS: dict[str, list[tuple[float, float, float, float, float]] | str] = {
    # name: [(ax, ay, bx, by, radius), ...]
    "dot": [(0.0, 0.0, 0.0, 0.0, 1.0)],
    "ring": _RING,
    "bar_along": [(-0.85, 0.0, 0.85, 0.0, 0.42)],
    "bar_across": [(0.0, -0.85, 0.0, 0.85, 0.42)],
    "plus": [(-0.9, 0.0, 0.9, 0.0, 0.3), (0.0, -0.9, 0.0, 0.9, 0.3)],
    "cross": [(-0.64, -0.64, 0.64, 0.64, 0.3), (-0.64, 0.64, 0.64, -0.64, 0.3)],
    "pair_along": [(-0.7, 0.0, -0.7, 0.0, 0.5), (0.7, 0.0, 0.7, 0.0, 0.5)],
    "pair_across": [(0.0, -0.7, 0.0, -0.7, 0.5), (0.0, 0.7, 0.0, 0.7, 0.5)],
    "chevron_fore": [(-0.45, 0.8, 0.45, 0.0, 0.3), (0.45, 0.0, -0.45, -0.8, 0.3)],
    "chevron_hind": [(0.45, 0.8, -0.45, 0.0, 0.3), (-0.45, 0.0, 0.45, -0.8, 0.3)],
}
_RING_RADIUS, _RING_HALF_WIDTH = 0.75, 0.28
# Order chosen so that the first glyphs (used when there are few classes) are mutually distinct.
GLYPHS: tuple[str, ...] = (
    "dot",
    "bar_along",
    "ring",
    "bar_across",
    "plus",
    "pair_along",
    "chevron_fore",
    "cross",
    "pair_across",
    "chevron_hind",
)
# Slot centres in body units (body semi-axes 1.0 × BODY_B, head at +x, back at +y).
SLOTS: dict[str, tuple[float, float]] = {
    "fore": (0.48, -0.12),
    "hind": (-0.48, -0.12),
    "mid": (0.0, -0.12),
}
_SLOT_ORDER = ("fore", "hind", "mid")
MAX_CLASSES = len(GLYPHS) * len(_SLOT_ORDER)
GLYPH_AREA = 0.16  # area of every marking, body units² (body ellipse area = π·1·0.6 ≈ 1.88)

BODY_B = 0.6
_SPLITS = {"train": 0, "test": 1}


def class_layout(num_classes: int, slots: int = 0) -> list[tuple[str, str]]:
    """The (glyph, slot) pair of each class: P slots (``slots``; 0 = auto: 2 if num_classes <= 20
    else 3), ceil(num_classes / P) glyphs, class k = (GLYPHS[k // P], slot k % P). With P = 1 every
    marking sits mid-flank and the glyph alone decides the class (up to len(GLYPHS) classes)."""
    n_slots = slots or (2 if num_classes <= 2 * len(GLYPHS) else 3)
    if n_slots not in (1, 2, 3):
        raise ValueError(f"slots must be 0 (auto), 1, 2 or 3, got {slots}")
    order = ("mid",) if n_slots == 1 else _SLOT_ORDER[:n_slots]
    most = len(GLYPHS) * n_slots
    if not 2 <= num_classes <= most:
        raise ValueError(f"num_classes must be in [2, {most}] with {n_slots} slot(s), got {num_classes}")
    return [(GLYPHS[k // n_slots], order[k % n_slots]) for k in range(num_classes)]


@dataclass(frozen=True, kw_only=True)
class GeneratorSettings:
    """Everything that decides what the generator renders: the same settings give byte-identical images,
    labels and ids (module docstring). Invalid settings are refused here, so every holder is a valid one."""

    num_classes: int = 10  # classes = (glyph, slot) pairs, class_layout(num_classes, slots)
    train_per_class: int = 200
    test_per_class: int = 100
    image_size: int = 64
    seed: int = 0
    object_scale: tuple[float, float] = (0.22, 0.30)  # bird size range, fraction of the image per body unit
    background_bank: int = 32  # shared background scenes (0 = a unique one per image)
    slots: int = 0  # marking positions per glyph (0 = auto)
    mark_scale: float = 1.0  # marking size, a linear factor on the default marking
    look_bank: int = 0  # shared bird looks: rotation, colours, wing/tail shape, lighting (0 = a unique one per image)
    plain_background: bool = False  # a flat colour instead of the textured scene

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_scale", tuple(self.object_scale))  # a list when read from JSON
        self.layout()  # checks num_classes and slots
        if not 0.5 <= self.mark_scale <= 2.0:
            raise ValueError(f"mark_scale must be in [0.5, 2] (a larger marking leaves the body), got {self.mark_scale}")
        if self.train_per_class < 0 or self.test_per_class < 0:
            raise ValueError("train_per_class and test_per_class must be >= 0")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GeneratorSettings:
        """The settings named in `values` (a prepared cache's params, a config dump); other keys are ignored
        and a missing setting takes its default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_config(cls, cfg: DatasetConfig) -> GeneratorSettings:
        """The settings of a synthetic `datasets.<name>` entry (what `prepare` generates)."""
        if cfg.kind != "synthetic":
            raise ValueError(f"a generator reads a synthetic dataset entry, not kind {cfg.kind!r}")
        return cls.from_mapping(cfg.model_dump())

    def layout(self) -> list[tuple[str, str]]:
        """The (glyph, slot) pair of each class (class_layout)."""
        return class_layout(self.num_classes, self.slots)

    def as_params(self) -> dict:
        """The settings as JSON-ready values (``SyntheticDataset.params``)."""
        return {**asdict(self), "object_scale": list(self.object_scale)}


@dataclass
class SyntheticDataset:
    """Generated dataset. Items are train first, then test; within a split item i has label
    i % num_classes."""

    images: np.ndarray  # uint8 (N, S, S, 3), RGB
    labels: np.ndarray  # int64 (N,)
    split: np.ndarray  # str (N,), 'train' | 'test'
    class_names: list[str]
    ids: list[str]
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


# --------------------------------------------------------------------------------------------
# Signed-distance helpers (all broadcast over (B, S, S) arrays; float32).
# --------------------------------------------------------------------------------------------
def _cover(d: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of the region d <= 0; d in body units, unit = pixels per unit."""
    return np.clip(0.5 - d * unit, 0.0, 1.0)


def _sd_capsule(u, v, ax, ay, bx, by, r):
    pax, pay = u - ax, v - ay
    bax, bay = bx - ax, by - ay
    den = bax * bax + bay * bay
    if np.isscalar(den) and den == 0:
        return np.sqrt(pax * pax + pay * pay) - r
    h = np.clip((pax * bax + pay * bay) / den, 0.0, 1.0)
    dx, dy = pax - bax * h, pay - bay * h
    return np.sqrt(dx * dx + dy * dy) - r


def _sd_ellipse(u, v, a, b):
    """Approximate signed distance to an axis-aligned ellipse (good near the boundary)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2) + 1e-6
    return k0 * (k0 - 1.0) / k1


def _sd_glyph_unit(name: str, x, y):
    spec = _GLYPH_DEFS[name]
    if spec == _RING:
        return np.abs(np.sqrt(x * x + y * y) - _RING_RADIUS) - _RING_HALF_WIDTH
    d = None
    for ax, ay, bx, by, r in cast("list[tuple[float, float, float, float, float]]", spec):  # not _RING: a list of strokes
        di = _sd_capsule(x, y, ax, ay, bx, by, r)
        d = di if d is None else np.minimum(d, di)
    return d


@functools.cache
def _glyph_scale(name: str) -> float:
    """Scale that gives the glyph area GLYPH_AREA (area of the unit glyph measured on a grid)."""
    n = 800
    t = (np.arange(n) + 0.5) / n * 4.0 - 2.0
    x, y = np.meshgrid(t, t)
    area = float((_sd_glyph_unit(name, x, y) <= 0).mean()) * 16.0
    return math.sqrt(GLYPH_AREA / area)


# --------------------------------------------------------------------------------------------
# Per-item random parameters.
# --------------------------------------------------------------------------------------------
def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _random_colour(rng: np.random.Generator, s=(0.2, 0.95), v=(0.15, 0.95)) -> np.ndarray:
    return _hsv_to_rgb(rng.uniform(), rng.uniform(*s), rng.uniform(*v))


_OCTAVES = (3, 5, 9, 17)
_MAX_BLOBS = 6


def _item_params(
    rng: np.random.Generator,
    size: int,
    object_scale: tuple[float, float] = (0.22, 0.30),
    bg_rng: np.random.Generator | None = None,
    look_rng: np.random.Generator | None = None,
    plain: bool = False,
) -> dict:
    """One item's nuisance parameters. The background comes from ``bg_rng`` and the bird's look
    (rotation, colours, wing and tail shape, lighting) from ``look_rng`` when they are given (shared
    banks); position, size, facing and sensor noise always come from the item's own ``rng``."""
    p: dict = {}
    # background (from its own stream when backgrounds come from a shared bank)
    item_rng, rng = rng, bg_rng if bg_rng is not None else rng
    w = rng.uniform(0.0, 1.0, len(_OCTAVES)) * np.array([1.0, 0.8, 0.55, 0.35]) ** rng.uniform(0.3, 2.0)
    p["grids"] = [rng.standard_normal((c, c), dtype=np.float32) * np.float32(w[j]) for j, c in enumerate(_OCTAVES)]
    p["palette"] = np.stack([_random_colour(rng, (0.0, 1.0), (0.05, 1.0)) for _ in range(3)])
    p["stripe_amp"] = rng.uniform(0.0, 0.5) if rng.uniform() < 0.5 else 0.0
    p["stripe_freq"] = rng.uniform(1.5, 7.0)
    p["stripe_angle"] = rng.uniform(0, math.pi)
    p["stripe_phase"] = rng.uniform(0, 2 * math.pi)
    p["stripe_colour"] = _random_colour(rng, (0.0, 1.0), (0.0, 1.0))
    n_blobs = int(rng.integers(0, _MAX_BLOBS + 1))
    blobs = np.zeros((_MAX_BLOBS, 6), np.float32)  # x, y, r (pixels), rgb
    for j in range(n_blobs):
        blobs[j, :3] = (rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.04, 0.16) * size)
        blobs[j, 3:] = _random_colour(rng, (0.0, 1.0), (0.0, 1.0))
    p["blobs"] = blobs
    if plain:  # a flat colour: the scene carries no texture the bird's position could be read against
        p["grids"] = [g * 0 for g in p["grids"]]
        p["stripe_amp"], p["blobs"] = 0.0, blobs * 0
    rng = item_rng
    # object pose: unit = pixels per body unit (body = 2 units long, whole bird ≈ 3.3)
    unit = size * rng.uniform(*object_scale)
    p["unit"] = unit
    margin = 1.75 * unit
    p["cx"] = rng.uniform(margin, size - margin) if size > 2 * margin else size / 2
    p["cy"] = rng.uniform(margin, size - margin) if size > 2 * margin else size / 2
    p["theta"] = rng.uniform(-1.0, 1.0) * math.radians(40)
    p["flip"] = 1.0 if rng.uniform() < 0.5 else -1.0
    pose_rng = rng
    if look_rng is not None:  # position, size and facing stay the item's; rotation and the rest are the shared look
        rng = look_rng
        p["theta"] = rng.uniform(-1.0, 1.0) * math.radians(40)
    # object colours
    body = _random_colour(rng)
    p["body"] = body
    p["head"] = np.clip(body * rng.uniform(0.75, 1.25, 3), 0, 1).astype(np.float32)
    p["wing"] = np.clip(body * rng.uniform(0.55, 1.0) + rng.uniform(-0.1, 0.1, 3), 0, 1).astype(np.float32)
    p["beak"] = _hsv_to_rgb(rng.uniform(0.0, 0.17), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    p["wing_scale"] = rng.uniform(0.85, 1.15)
    p["tail_spread"] = rng.uniform(0.7, 1.3)
    lum = float(body @ np.array([0.299, 0.587, 0.114], np.float32))
    target = 0.05 if lum > 0.45 else 0.97
    p["mark"] = (body + (target - body) * rng.uniform(0.75, 0.95)).astype(np.float32)
    # lighting
    p["gain"] = rng.uniform(0.65, 1.25)
    p["gamma"] = math.exp(rng.uniform(-0.4, 0.4))
    p["cast"] = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    p["shade_amp"] = rng.uniform(0.0, 0.45)
    p["shade_angle"] = rng.uniform(0, 2 * math.pi)
    rng = pose_rng
    # sensor noise: uniform in ±amp (from raw bytes: much cheaper than normals)
    amp = np.float32(rng.uniform(0.01, 0.05) / 127.5)
    raw = np.frombuffer(rng.bytes(3 * size * size), np.uint8).reshape(3, size, size)
    p["noise"] = (raw.astype(np.float32) - np.float32(127.5)) * amp
    return p


# --------------------------------------------------------------------------------------------
# Rendering a chunk of items.
# --------------------------------------------------------------------------------------------
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells) bilinear interpolation weights from a coarse grid spanning the image."""
    t = (np.arange(size) + 0.5) / size * (cells - 1)
    i0 = np.clip(np.floor(t).astype(int), 0, cells - 2)
    f = t - i0
    m = np.zeros((size, cells), np.float32)
    m[np.arange(size), i0] = 1 - f
    m[np.arange(size), i0 + 1] = f
    return m


def _stack(ps: list[dict], key: str) -> np.ndarray:
    return np.asarray([p[key] for p in ps], dtype=np.float32)


def _col(ps: list[dict], key: str) -> np.ndarray:
    """(B, 3, 1, 1) colour array (rendering is channel-first: numpy is slow when the
    innermost broadcast axis has length 3)."""
    return _stack(ps, key)[:, :, None, None]


def _sc(ps: list[dict], key: str) -> np.ndarray:
    """(B, 1, 1) scalar array."""
    return _stack(ps, key)[:, None, None]


def _over(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Composite `colour` with coverage `alpha` over `img`, in place (img is returned)."""
    tmp = np.subtract(img, colour, dtype=np.float32)
    tmp *= alpha[:, None]
    img -= tmp
    return img


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx): pixel-centre coordinates, (S, S) each."""
    pix = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(pix, pix, indexing="ij")


def _background(ps: list[dict], size: int) -> np.ndarray:
    """(B, 3, S, S) float background scenes: palette-mapped noise field, stripes, blobs."""
    b = len(ps)
    yy, xx = _pixel_grid(size)
    xn, yn = xx / size, yy / size

    # ---- background: multi-octave smooth noise through a 3-colour palette
    field_ = np.zeros((b, size, size), np.float32)
    for j, c in enumerate(_OCTAVES):
        m = _interp_matrix(size, c)
        g = np.stack([p["grids"][j] for p in ps])
        field_ += np.matmul(np.matmul(m, g), m.T)
    lo = field_.min(axis=(1, 2), keepdims=True)
    hi = field_.max(axis=(1, 2), keepdims=True)
    t = (field_ - lo) / np.maximum(hi - lo, 1e-6) * 2.0  # [0, 2]
    pal = _stack(ps, "palette")  # (B, 3 colours, 3)
    t1 = np.clip(t, 0, 1)[:, None]
    t2 = np.clip(t - 1, 0, 1)[:, None]
    pal = pal[..., None, None]  # (B, 3 colours, 3 channels, 1, 1)
    img = pal[:, 0] + (pal[:, 1] - pal[:, 0]) * t1  # (B, 3, S, S)
    img += (pal[:, 2] - pal[:, 1]) * t2
    # stripes
    ang = _sc(ps, "stripe_angle")
    s = 0.5 + 0.5 * np.sin(2 * math.pi * _sc(ps, "stripe_freq") * (xn * np.cos(ang) + yn * np.sin(ang)) + _sc(ps, "stripe_phase"))
    img = _over(img, s * _sc(ps, "stripe_amp"), _col(ps, "stripe_colour"))
    # blobs
    blobs = _stack(ps, "blobs")  # (B, K, 6)
    for k in range(_MAX_BLOBS):
        idx = np.nonzero(blobs[:, k, 2] > 0)[0]  # items that have a k-th blob
        if idx.size == 0:
            continue
        bx, by, br = (blobs[idx, k, i][:, None, None] for i in range(3))
        d = np.sqrt((xx - bx) ** 2 + (yy - by) ** 2) - br
        img[idx] = _over(img[idx], np.clip(0.5 - d, 0, 1), blobs[idx, k, 3:, None, None])
    return img


def _object_frame(ps: list[dict], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, unit): every pixel in the object's own frame, in object units, and pixels per unit."""
    yy, xx = _pixel_grid(size)
    unit = _sc(ps, "unit")
    th = _sc(ps, "theta")
    dx, dy = xx - _sc(ps, "cx"), yy - _sc(ps, "cy")
    cos, sin = np.cos(th), np.sin(th)
    u = (dx * cos + dy * sin) / unit * _sc(ps, "flip")
    v = -(-dx * sin + dy * cos) / unit
    return u, v, unit


def _lighting(img: np.ndarray, ps: list[dict], size: int) -> np.ndarray:
    """Shading gradient, colour cast, gain, gamma and sensor noise; (B, S, S, 3) uint8."""
    yy, xx = _pixel_grid(size)
    xn, yn = xx / size, yy / size
    sa = _sc(ps, "shade_angle")
    shade = 1.0 + _sc(ps, "shade_amp") * ((xn - 0.5) * np.cos(sa) + (yn - 0.5) * np.sin(sa)) * 2
    img = np.clip(img * shade[:, None] * _col(ps, "cast"), 0, 1)
    img = _sc(ps, "gain")[:, None] * img ** _sc(ps, "gamma")[:, None]
    img = img + np.stack([p["noise"] for p in ps])
    img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img.transpose(0, 2, 3, 1))


def _sd_polygon(u: np.ndarray, v: np.ndarray, pts) -> np.ndarray:
    """Signed distance (exact inside, a lower bound outside) to a convex polygon, corners counter-clockwise (u right, v up)."""
    d = None
    for i in range(len(pts)):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % len(pts)]
        ex, ey = x1 - x0, y1 - y0
        di = ((u - x0) * ey - (v - y0) * ex) / np.sqrt(ex * ex + ey * ey)  # outward normal of a counter-clockwise edge
        d = di if d is None else np.maximum(d, di)
    return cast(np.ndarray, d)  # a polygon has corners: d is set


def _bird_parts(ps: list[dict], u: np.ndarray, v: np.ndarray, unit: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bird's parts in drawing order, as (coverage (B, S, S), colour (B, 3, 1, 1)): legs, tail,
    body, wing, beak, head, eye. Their union is the object; the marking is drawn over them."""
    b = len(ps)
    spread = _sc(ps, "tail_spread")
    tip_x, half = -1.75, 0.3 * spread
    d_tail = _sd_polygon(u, v, [(-0.7, 0.12), (tip_x, 0.12 + half), (tip_x, 0.12 - half)])  # corners (B, 1, 1)
    dark = np.full((b, 3, 1, 1), 0.12, np.float32)
    d_legs = np.minimum(
        _sd_capsule(u, v, 0.15, -0.45, 0.1, -1.0, 0.045),
        _sd_capsule(u, v, -0.2, -0.45, -0.25, -1.0, 0.045),
    )
    ws = _sc(ps, "wing_scale")  # the wing on the back
    return [
        (_cover(d_legs, unit), dark),
        (_cover(d_tail, unit), _col(ps, "wing")),
        (_cover(_sd_ellipse(u, v, 1.0, BODY_B), unit), _col(ps, "body")),
        (_cover(_sd_ellipse(u + 0.25, v - 0.3, 0.6 * ws, 0.2), unit), _col(ps, "wing")),
        (_cover(_sd_capsule(u, v, 1.2, 0.5, 1.62, 0.42, 0.07), unit), _col(ps, "beak")),
        (_cover(_sd_capsule(u, v, 0.95, 0.5, 0.95, 0.5, 0.36), unit), _col(ps, "head")),
        (_cover(_sd_capsule(u, v, 1.08, 0.6, 1.08, 0.6, 0.075), unit), dark),
    ]


def _marking(glyphs: list[str], slots: list[str], u: np.ndarray, v: np.ndarray, unit: np.ndarray, mark_scale: float) -> np.ndarray:
    """(B, S, S) coverage of the class-defining marking (computed only for the items that carry each glyph)."""
    mark = np.zeros(u.shape, np.float32)
    glyph_arr = np.asarray(glyphs)
    for name in set(glyphs):
        idx = np.nonzero(glyph_arr == name)[0]
        sx = np.array([SLOTS[slots[i]][0] for i in idx], np.float32)[:, None, None]
        sy = np.array([SLOTS[slots[i]][1] for i in idx], np.float32)[:, None, None]
        g = _glyph_scale(name) * mark_scale
        d = _sd_glyph_unit(name, (u[idx] - sx) / g, (v[idx] - sy) / g) * g
        mark[idx] = _cover(d, unit[idx])
    return mark


def _render(ps: list[dict], glyphs: list[str], slots: list[str], size: int, mark_scale: float = 1.0) -> np.ndarray:
    img = _background(ps, size)
    u, v, unit = _object_frame(ps, size)  # u towards the head, v towards the back, in body units
    for cover, colour in _bird_parts(ps, u, v, unit):
        img = _over(img, cover, colour)
    img = _over(img, _marking(glyphs, slots, u, v, unit, mark_scale), _col(ps, "mark"))
    return _lighting(img, ps, size)


def _params_of_item(split: str, i: int, settings: GeneratorSettings) -> dict:
    """Item i of `split`'s parameters, from its own random stream (seeded by (seed, split, i)) and the shared banks."""
    s = settings
    rng = np.random.default_rng([s.seed, _SPLITS[split], i])
    bg = None
    if s.background_bank > 0:  # the background is one of `background_bank` shared scenes
        bg = np.random.default_rng([s.seed, 7, int(rng.integers(s.background_bank))])
    look = None
    if s.look_bank > 0:  # the bird's look is one of `look_bank` shared looks
        look = np.random.default_rng([s.seed, 8, int(rng.integers(s.look_bank))])
    return _item_params(rng, s.image_size, s.object_scale, bg, look, s.plain_background)


# What the oracle pair swaps: the scene behind the bird and the light on the whole image (``_item_params``).
SCENE_KEYS = ("grids", "palette", "stripe_amp", "stripe_freq", "stripe_angle", "stripe_phase", "stripe_colour", "blobs")
LIGHT_KEYS = ("gain", "gamma", "cast", "shade_amp", "shade_angle")


def render_with_scene_of(split: str, indices, donors, settings: GeneratorSettings = GeneratorSettings()) -> np.ndarray:
    """Items `indices` of `split` re-rendered with the background scene and lighting of items `donors`
    (same split): the same bird, pose, colours, marking and class, another image's nuisance. (n, S, S, 3)
    uint8; with donors == indices it is the dataset's own rendering of them. The oracle pair of the
    module study (finesyn.pairs.oracle): the pair the module's decoded pair is meant to approximate."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    indices, donors = [int(i) for i in indices], [int(j) for j in donors]
    if len(indices) != len(donors):
        raise ValueError(f"render_with_scene_of: {len(indices)} indices but {len(donors)} donors")
    layout = settings.layout()
    ps = []
    for i, j in zip(indices, donors):
        p, d = _params_of_item(split, i, settings), _params_of_item(split, j, settings)
        ps.append({**p, **{k: d[k] for k in SCENE_KEYS + LIGHT_KEYS}})
    labels = [i % settings.num_classes for i in indices]
    return _render(ps, [layout[y][0] for y in labels], [layout[y][1] for y in labels], settings.image_size, settings.mark_scale)


def object_and_marking_masks(split: str, indices, settings: GeneratorSettings = GeneratorSettings()) -> tuple[np.ndarray, np.ndarray]:
    """Where the bird and its marking are in items `indices` of `split` of the dataset that
    ``generate_synthetic`` renders with these settings (the counts play no part): (object, marking),
    float32 (n, S, S) anti-aliased coverages in [0, 1], the same ones the renderer composites. The
    marking lies on the bird; it is the only thing that differs between two classes' renderings of an
    item, so it is where an encoder that reads the class must look (the report measures Grad-CAM mass on it)."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    layout = settings.layout()
    indices = [int(i) for i in indices]
    ps = [_params_of_item(split, i, settings) for i in indices]
    u, v, unit = _object_frame(ps, settings.image_size)
    obj = np.zeros(u.shape, np.float32)
    for cover, _ in _bird_parts(ps, u, v, unit):
        obj += cover * (1 - obj)  # coverage of the union, as the compositing layers them
    labels = [i % settings.num_classes for i in indices]
    mark = _marking([layout[y][0] for y in labels], [layout[y][1] for y in labels], u, v, unit, settings.mark_scale)
    return obj, mark


def generate_synthetic(
    settings: GeneratorSettings = GeneratorSettings(),
    *,
    chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticDataset:
    """Render the synthetic fine-grained dataset (see the module docstring).

    Items: train first (``num_classes * train_per_class``), then test; in each split item i
    has label ``i % num_classes``. Deterministic in the settings; ``chunk`` only bounds memory.
    ``progress(done, total)`` is called before the first chunk and after each (images).
    """
    s = settings
    layout = s.layout()
    items: list[tuple[str, int, int]] = []  # (split, index in split, label)
    for split, per_class in (("train", s.train_per_class), ("test", s.test_per_class)):
        items += [(split, i, i % s.num_classes) for i in range(per_class * s.num_classes)]
    n = len(items)
    images = np.empty((n, s.image_size, s.image_size, 3), np.uint8)
    if progress:
        progress(0, n)
    for start in range(0, n, chunk):
        part = items[start : start + chunk]
        ps = [_params_of_item(sp, i, s) for sp, i, _ in part]
        images[start : start + len(part)] = _render(
            ps, [layout[y][0] for *_, y in part], [layout[y][1] for *_, y in part], s.image_size, s.mark_scale
        )
        if progress:
            progress(start + len(part), n)
    return SyntheticDataset(
        images=images,
        labels=np.array([y for *_, y in items], dtype=np.int64),
        split=np.array([sp for sp, *_ in items], dtype=str),
        class_names=[f"{g}@{slot}" for g, slot in layout],
        ids=[f"synthetic-{sp}-{i:06d}" for sp, i, _ in items],
        params=s.as_params(),
    )


# --------------------------------------------------------------------------------------------
# Example grid.
# --------------------------------------------------------------------------------------------
def save_grid(ds: SyntheticDataset, out: str | Path, per_class: int = 6, zoom: int = 3) -> Path:
    """Save a PNG: one row per class (first `per_class` train items), upscaled `zoom`×."""
    from PIL import Image, ImageDraw

    s = ds.image_size * zoom
    label_w, pad = 130, 4
    rows = len(ds.class_names)
    canvas = Image.new("RGB", (label_w + per_class * (s + pad), rows * (s + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    train = np.nonzero(ds.split == "train")[0]
    for c, name in enumerate(ds.class_names):
        idx = train[ds.labels[train] == c][:per_class]
        y = c * (s + pad)
        draw.text((4, y + s // 2 - 6), f"{c}: {name}", fill="black")
        for j, i in enumerate(idx):
            tile = Image.fromarray(ds.images[i]).resize((s, s), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_w + j * (s + pad), y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finesyn.data.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="PNG path for the example grid")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--zoom", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    settings = GeneratorSettings(
        num_classes=a.num_classes, train_per_class=a.per_class, test_per_class=0, image_size=a.image_size, seed=a.seed
    )
    ds = generate_synthetic(settings)
    print(save_grid(ds, a.out, per_class=a.per_class, zoom=a.zoom))
    return 0


if __name__ == "__main__":
    sys.exit(main())

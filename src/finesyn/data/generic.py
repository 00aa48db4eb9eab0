"""The generic world: the offline stand-in for ImageNet that the `init` stage trains on.

The paper's protocol starts SSL from an ImageNet-supervised encoder; ImageNet cannot be
downloaded here, and an encoder trained from scratch for a few CPU minutes learns nothing on
fine-grained data. So the `init` stage trains once, with labels, on a *generic* generated world
whose classes are not the fine-grained ones — as ImageNet's classes are not CUB's:

- a class is the **kind of a whole object**: one of ten plain geometric shapes (triangle,
  square, pentagon, hexagram, crescent, half-disc, arrow, tee, ell, rhombus), drawn at any
  rotation and over a wide range of sizes (``object_scale``, fraction of the image per shape
  unit), in one random colour;
- no bird, no glyph, no slot: nothing of the fine-grained classes' definition is in it;
- the same kind of clutter and lighting as the fine-grained data (its own background bank,
  drawn from other random streams: ImageNet's scenes are not CUB's either).

It teaches what ImageNet teaches a ResNet on the way: edges, corners, shapes at several scales,
invariance to clutter and lighting. ``python -m finesyn.data.generic --out grid.png`` saves
examples. Deterministic in ``seed``, like the fine-grained generator.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from finesyn.data.synthetic import (
    SyntheticDataset,
    _background,
    _col,
    _cover,
    _item_params,
    _lighting,
    _object_frame,
    _over,
    _sd_capsule,
    _sd_polygon,
    save_grid,
)

__all__ = ["SHAPES", "generate_generic"]


def _regular(n: int, r: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
    """Counter-clockwise corners of a regular n-gon (the frame's v axis points up)."""
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _sd_shape(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to a unit-sized shape (it fits the unit disc); negative inside."""
    if name == "triangle":
        return _sd_polygon(u, v, _regular(3, 1.0, math.pi / 2))
    if name == "square":
        return _sd_polygon(u, v, _regular(4, 1.0, math.pi / 4))
    if name == "pentagon":
        return _sd_polygon(u, v, _regular(5, 1.0, math.pi / 2))
    if name == "rhombus":
        return _sd_polygon(u, v, [(0.0, 1.0), (-0.5, 0.0), (0.0, -1.0), (0.5, 0.0)])
    if name == "hexagram":
        return np.minimum(_sd_polygon(u, v, _regular(3, 1.0, math.pi / 2)), _sd_polygon(u, v, _regular(3, 1.0, -math.pi / 2)))
    if name == "crescent":
        return np.maximum(np.hypot(u, v) - 0.95, -(np.hypot(u - 0.45, v) - 0.75))
    if name == "semicircle":
        return np.maximum(np.hypot(u, v) - 1.0, -v)
    if name == "arrow":
        head = _sd_polygon(u, v, [(0.2, -0.6), (1.0, 0.0), (0.2, 0.6)])
        return np.minimum(head, _sd_capsule(u, v, -0.8, 0.0, 0.3, 0.0, 0.2))
    if name == "tee":
        return np.minimum(_sd_capsule(u, v, -0.55, 0.5, 0.55, 0.5, 0.2), _sd_capsule(u, v, 0.0, 0.5, 0.0, -0.75, 0.2))
    if name == "ell":
        return np.minimum(_sd_capsule(u, v, -0.4, 0.65, -0.4, -0.55, 0.2), _sd_capsule(u, v, -0.4, -0.55, 0.55, -0.55, 0.2))
    raise ValueError(f"unknown shape {name!r}")


SHAPES: tuple[str, ...] = ("triangle", "square", "pentagon", "hexagram", "crescent", "semicircle", "arrow", "tee", "ell", "rhombus")


def _render_shapes(ps: list[dict], names: list[str], size: int) -> np.ndarray:
    img = _background(ps, size)
    u, v, unit = _object_frame(ps, size)
    d = np.empty_like(u)
    arr = np.asarray(names)
    for name in set(names):
        idx = np.nonzero(arr == name)[0]
        d[idx] = _sd_shape(name, u[idx], v[idx])
    img = _over(img, _cover(d, unit), _col(ps, "body"))
    return _lighting(img, ps, size)


def generate_generic(
    num_classes: int = 10,
    train_per_class: int = 300,
    test_per_class: int = 50,
    image_size: int = 64,
    seed: int = 0,
    object_scale: tuple[float, float] = (0.05, 0.3),
    background_bank: int = 32,
    chunk: int = 64,
) -> SyntheticDataset:
    """Render the generic world (module docstring); items train first, item i has label i % num_classes."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
    items = [(s, i, i % num_classes) for s, per in ((0, train_per_class), (1, test_per_class)) for i in range(per * num_classes)]
    images = np.empty((len(items), image_size, image_size, 3), np.uint8)
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        ps = []
        for split, i, _ in part:
            rng = np.random.default_rng([seed, 11 + split, i])  # streams of their own: no fine-grained item is reused
            bg = np.random.default_rng([seed, 17, int(rng.integers(background_bank))]) if background_bank > 0 else None
            p = _item_params(rng, image_size, object_scale, bg)
            margin = 1.05 * p["unit"]
            p["cx"] = rng.uniform(margin, image_size - margin) if image_size > 2 * margin else image_size / 2
            p["cy"] = rng.uniform(margin, image_size - margin) if image_size > 2 * margin else image_size / 2
            p["theta"] = rng.uniform(0.0, 2 * math.pi)
            ps.append(p)
        images[start : start + len(part)] = _render_shapes(ps, [SHAPES[y] for *_, y in part], image_size)
    return SyntheticDataset(
        images=images,
        labels=np.array([y for *_, y in items], dtype=np.int64),
        split=np.array(["train" if s == 0 else "test" for s, *_ in items], dtype=str),
        class_names=list(SHAPES[:num_classes]),
        ids=[f"generic-{'train' if s == 0 else 'test'}-{i:06d}" for s, i, _ in items],
        params={
            "world": "generic",
            "num_classes": num_classes,
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "image_size": image_size,
            "seed": seed,
            "object_scale": list(object_scale),
            "background_bank": background_bank,
        },
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finesyn.data.generic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="PNG path for the example grid")
    ap.add_argument("--per-class", type=int, default=6)
    a = ap.parse_args(argv)
    print(save_grid(generate_generic(train_per_class=a.per_class, test_per_class=0), a.out, per_class=a.per_class))
    return 0


if __name__ == "__main__":
    sys.exit(main())

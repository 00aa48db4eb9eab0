"""Build the prepared cache of one dataset: generated (synthetic) or decoded from its official layout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from finesyn.config import DatasetConfig

log = logging.getLogger("finesyn.prepare")


def prepare_dataset(name: str, cfg: DatasetConfig, out: Path, progress: Callable[[int, int], None] | None = None):
    from finesyn.data.cache import prepare_from_index, write_cache_from_arrays

    settings = cfg.model_dump(mode="json")
    if settings["unlabelled_root"] is None:  # a key added later: unset, the cache (and the runs on it) stay what they were
        del settings["unlabelled_root"]
    if cfg.kind == "synthetic":
        from finesyn.data.synthetic import GeneratorSettings, generate_synthetic

        t0 = time.perf_counter()
        syn = generate_synthetic(GeneratorSettings.from_config(cfg), progress=progress)
        log.info("generated %d images in %.1f s", len(syn.labels), time.perf_counter() - t0)
        return write_cache_from_arrays(
            out,
            syn.images,
            syn.labels,
            syn.split,
            syn.ids,
            None,
            syn.class_names,
            {"name": name, "kind": "synthetic", "params": settings},
        )
    from finesyn.data.sources import index_dataset, index_unlabelled

    index = index_dataset(cfg.kind, cast(Path, cfg.root), **cfg.index_options())  # not synthetic: a root (DatasetConfig)
    log.info("indexed %s at %s: %d images, %d classes", cfg.kind, cfg.root, len(index.items), len(index.classes))
    if cfg.unlabelled_root is not None:  # after the labelled images: their rows keep their places
        extra = index_unlabelled(cfg.unlabelled_root)
        index.items = index.items + extra
        log.info("indexed %d unlabelled images at %s (pretraining of the label-free methods only)", len(extra), cfg.unlabelled_root)
    ds = prepare_from_index(
        index,
        out,
        image_size=cfg.image_size,
        fit=cfg.fit,
        workers=cfg.workers,
        on_bad_image=cfg.on_bad_image,
        progress=progress,
        meta_extra={"name": name, "kind": cfg.kind, "params": settings},
    )
    _warn_about_dropped_and_flat(ds, name)
    return ds


def _warn_about_dropped_and_flat(ds, name: str) -> None:
    """What the cache left out or could not render is said in the log, not only in meta.json."""
    skipped = ds.meta.get("skipped") or []
    if skipped:
        log.warning(
            "datasets.%s.on_bad_image: skip dropped %d unreadable image(s), e.g. %s (%s); all are listed in %s/meta.json",
            name, len(skipped), skipped[0]["source"], skipped[0]["reason"], ds.path,
        )  # fmt: skip
    flat = ds.meta.get("constant_images") or {}
    if flat.get("count"):
        log.warning(
            "%d of %d images of %s decode to one flat colour, e.g. %s: blank files, or a bit depth this decoder misread "
            "(save them as 8-bit); listed in %s/meta.json constant_images",
            flat["count"], len(ds), name, flat["examples"][0], ds.path,
        )  # fmt: skip

"""Is a dataset's root on disk, in the layout of its kind? Checked by `validate` (before any work)
and by `prepare`; the stages after prepare read only the prepared cache and never import this."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from finesyn.config import DatasetConfig, Params, ParamsError, dataset_config
from finesyn.data.sources import DatasetLayoutError, index_dataset, index_unlabelled


def check_dataset_root(params: Params, dataset: str) -> DatasetConfig:
    """Fail fast when a dataset in use has no root on disk, or not its kind's layout."""
    cfg = dataset_config(params, dataset)
    if cfg.kind == "synthetic":
        return cfg
    root = cast(Path, cfg.root)  # required for every kind but synthetic (DatasetConfig's validator)
    if not root.exists():
        raise ParamsError(
            f"datasets.{dataset}.root: directory {str(cfg.root)!r} does not exist "
            f"(expected the {cfg.kind} dataset in its official layout; see README 'Reproduce the paper on real data')"
        )
    try:  # the annotation files and the listed images, not their pixels: seconds, before an hour of other stages
        index_dataset(cfg.kind, root, **cfg.index_options())
    except DatasetLayoutError as e:
        raise ParamsError(f"datasets.{dataset}.root: {str(cfg.root)!r} is not a {cfg.kind} dataset: {e}") from None
    if cfg.unlabelled_root is not None:
        try:
            index_unlabelled(cfg.unlabelled_root)
        except DatasetLayoutError as e:
            raise ParamsError(f"datasets.{dataset}.unlabelled_root: {e}") from None
    return cfg

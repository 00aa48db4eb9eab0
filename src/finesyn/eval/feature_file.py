"""The extract stage's feature file, readable without torch/torchvision (the probe and retrieve
stages start faster: importing torchvision costs ~2 s per process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_features(path: Path) -> dict[str, np.ndarray]:
    """The extract stage's .npz: {train,test}_{features,labels,ids}, num_classes, encoder_run_id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no features (run the extract stage first)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

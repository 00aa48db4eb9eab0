"""Does the training recipe suit the crop size of each dataset it trains on?

params.yaml's recipe is tuned for the 64-px default (a plain convnet with a global max pool sized to an 8x8
marking, blur sigma scaled to 64 px); params/paper.yaml's for 224-px crops (ResNet-50, MoCo v2's blur). Either
runs on the other's data without an error and learns little, so `validate` says so, naming the settings.
"""

from __future__ import annotations

from finesyn.config import Params, PretrainConfig

SMALL_CROPS = 96  # at most: the default recipe's scale; at least twice that: the paper's
LARGE_CROPS = 2 * SMALL_CROPS


def _misfits(cfg: PretrainConfig, crop: int) -> str | None:
    sigma = list(cfg.augment.blur_sigma)
    if crop >= LARGE_CROPS:
        small = [f"backbone: {cfg.backbone}"] if cfg.backbone == "convnet" else []
        small += [f"augment.blur_sigma: {sigma}"] if sigma[1] < 1.0 else []
        if small:
            return (
                f"pretrain {', '.join(small)}: settings made for the 64-px default; for crops of this size start from "
                "params/paper.yaml's pretrain section (ResNet-50, blur sigma [0.1, 2.0])"
            )
    elif crop <= SMALL_CROPS and sigma[1] >= 1.5:
        return f"pretrain augment.blur_sigma: {sigma}, MoCo v2's blur for 224-px crops; scale it to the crop (the default: [0.1, 0.6] at 64 px)"
    return None


def recipe_warnings(params: Params) -> list[str]:
    """One line per dataset of the grid (and misfit) whose training recipe was made for another crop size."""
    found: dict[tuple[str, str], list[str]] = {}
    for d in params.grid.datasets:
        for e in params.grid.experiments:
            if params.experiments[e].method == "none":
                continue
            misfit = _misfits(params.pretrain_for(e), params.datasets[d].crop_size)
            if misfit:
                found.setdefault((d, misfit), []).append(e)
    return [
        f"datasets.{d}.crop_size is {params.datasets[d].crop_size} px, but {', '.join(es)} train with {m}" for (d, m), es in found.items()
    ]

"""Frozen-encoder features: one deterministic view (centre crop), BN in eval mode, batched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.fx.experimental.optimization import fuse

from finesyn.data.augment import eval_view
from finesyn.device import host_to_device, select_device
from finesyn.models.backbone import Backbone


def inference_model(backbone: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode Backbone with each BatchNorm folded into the conv before it (torch.fx's `fuse`, on a copy):
    the same function up to float rounding, and 1.4x faster on CPU for the default's convnet. Returned as it is:
    another module (the tests' stand-ins), and a backbone with another BatchNorm than BatchNorm2d (a SyncBatchNorm
    under torchrun's learning monitor branches on its input, which torch.fx cannot trace)."""
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not isinstance(backbone, Backbone) or any(type(m) is not torch.nn.BatchNorm2d for m in norms):
        return backbone
    return fuse(backbone.net)


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    images: np.ndarray,
    indices: np.ndarray,
    crop_size: int,
    batch_size: int = 256,
    device: str = "auto",
    projector: torch.nn.Module | None = None,
    channels_last: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """float32 (len(indices), d) pooled features h (or projector(h) if a projector is given).

    `channels_last` (pretrain.channels_last): NHWC backbone and images, the layout training used;
    the features differ from NCHW ones only by float rounding. `progress(done, total)` is called
    before the first batch and after each (images; minutes for a ResNet-50 on CUB).
    """
    dev = select_device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = inference_model(backbone.to(dev).eval()).to(memory_format=fmt)
    head = projector.to(dev).eval() if projector is not None else None
    dtype = next(model.parameters()).dtype  # float32; float64 where a test compares devices exactly
    out = []
    if progress:
        progress(0, len(indices))
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        x = eval_view(host_to_device(torch.from_numpy(np.ascontiguousarray(images[idx])), dev), crop_size, dtype)
        x = x.contiguous(memory_format=fmt)
        h = model(x)
        out.append((head(h) if head is not None else h).float().cpu().numpy())
        if progress:
            progress(start + len(idx), len(indices))
    d = out[0].shape[1] if out else backbone.dim
    return np.concatenate(out) if out else np.zeros((0, d), np.float32)


def load_encoder(model_dir: Path):
    """Rebuild the backbone (and projector, if any) from a pretrain output directory; strict loading."""
    from finesyn.artifacts import ArtifactError, load_encoder_state
    from finesyn.finite import named, nonfinite_tensors
    from finesyn.models.heads import mlp

    state = load_encoder_state(model_dir)
    bad = nonfinite_tensors({k: state.get(k) or {} for k in ("backbone", "projector")})
    if bad:
        raise ArtifactError(
            f"{Path(model_dir) / 'encoder.pt'}: {named(bad)} hold inf/NaN (a diverged run): no features are extracted from it; "
            f"rerun pretrain with a lower pretrain.lr or more pretrain.warmup_epochs"
        )
    backbone = Backbone(state["arch"], state["stem"], state.get("pool", "avg"))
    backbone.load_state_dict(state["backbone"])  # strict: a mismatched file fails naming the keys
    projector = None
    if state.get("projector") is not None:
        projector = mlp(**state["projector_spec"])
        projector.load_state_dict(state["projector"])
    return backbone, projector, state

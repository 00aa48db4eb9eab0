"""Encoder f: a torchvision ResNet whose classifier is removed, so f(x) is the pooled feature h."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

IMAGENET_HINT = (
    "Get the torchvision ImageNet checkpoint for {arch} on a machine with internet "
    "(`python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"` stores it "
    "under ~/.cache/torch/hub/checkpoints/, where init: imagenet finds it), or set pretrain.init to the .pth file's path."
)


class Backbone(nn.Module):
    """ResNet trunk + global average pool. `dim` is the size of h (512 for ResNet-18, 2048 for ResNet-50)."""

    def __init__(self, arch: str = "resnet18", stem: str = "standard"):
        super().__init__()
        net = getattr(models, arch)(weights=None)
        if stem == "small":
            # Low-resolution stem (CIFAR-style): keeps spatial detail that a stride-4 stem destroys at ≤64 px.
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.arch, self.stem = arch, stem

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's feature maps (for spatial Grad-CAM)."""
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_init(backbone: Backbone, init: str) -> None:
    """Apply pretrain.init: 'random' keeps the seeded initialisation; else load a state_dict strictly."""
    if init == "random":
        return
    if init == "imagenet":
        weights = models.get_model_weights(backbone.arch).IMAGENET1K_V1
        try:  # torch hub's cache first; downloads only where there is internet
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # noqa: BLE001 - no network, proxy, corrupt download: one actionable message
            raise FileNotFoundError(f"pretrain.init: imagenet: could not load {weights} ({type(e).__name__}). " + IMAGENET_HINT.format(arch=backbone.arch)) from None
        _load_trunk(backbone, state, "ImageNet")
        return
    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"pretrain.init: file {str(path)!r} not found. " + IMAGENET_HINT.format(arch=backbone.arch))
    state = torch.load(path, map_location="cpu", weights_only=True)
    _load_trunk(backbone, state.get("state_dict", state), str(path))


def _load_trunk(backbone: Backbone, state: dict, source: str) -> None:
    """Load a ResNet state_dict into the trunk (classifier dropped); mismatches fail naming the keys."""
    state = {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items() if not k.startswith("fc.")}
    if backbone.stem == "small":
        state.pop("conv1.weight", None)  # the small stem has a different first conv; it starts from scratch
    missing, unexpected = backbone.net.load_state_dict(state, strict=False)
    allowed_missing = {"conv1.weight"} if backbone.stem == "small" else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(
            f"pretrain.init: {source} does not fit {backbone.arch}: missing keys {sorted(set(missing) - allowed_missing)[:8]}, "
            f"unexpected keys {sorted(unexpected)[:8]}"
        )

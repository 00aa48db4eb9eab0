"""Encoder f: a torchvision ResNet whose classifier is removed, so f(x) is the pooled feature h."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from finesyn.errors import UserError


class InitFileError(UserError, FileNotFoundError):
    """pretrain.init names a file that is missing or is not a state_dict."""


IMAGENET_HINT = (
    "Get the torchvision ImageNet checkpoint for {arch} on a machine with internet "
    "(`python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"` stores it "
    "under ~/.cache/torch/hub/checkpoints/, where init: imagenet finds it), or set pretrain.init to the .pth file's path."
)
TORCHVISION_ARCHS = ("resnet18", "resnet50")  # the backbones torchvision has ImageNet weights for


def init_hint(arch: str) -> str:
    """What to do about a missing init file; finesyn's own convnets have no ImageNet checkpoint to fetch."""
    if arch in TORCHVISION_ARCHS:
        return IMAGENET_HINT.format(arch=arch)
    return (
        f"{arch} has no published ImageNet weights: use pretrain.init: random, or the path of a state_dict of the same "
        f"backbone (e.g. one saved with torch.save(backbone.state_dict(), 'init.pth'))."
    )


def _first_sentence(e: Exception) -> str:
    """torch.load's errors run to paragraphs about weights_only: their first sentence says what failed."""
    return (str(e).splitlines() or [""])[0].split(". ")[0][:160]


def read_init_state(init: str, arch: str) -> dict[str, torch.Tensor]:
    """The state_dict a pretrain.init path names, or one error saying what is wrong with the file.
    The validate stage calls it too, so a bad file fails before any work."""
    path = Path(init)
    if not path.is_file():
        raise InitFileError(f"pretrain.init: file {str(path)!r} not found. " + init_hint(arch))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickles of other objects, truncated or foreign files
        raise InitFileError(
            f"pretrain.init: {path} does not load as a PyTorch state_dict ({type(e).__name__}: {_first_sentence(e)}); "
            "expected a file written by torch.save(model.state_dict(), path)"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise InitFileError(f"pretrain.init: {path} loads but holds no tensors (got {type(state).__name__}); expected a state_dict")
    return state


def _models():
    """torchvision.models, imported on first use: the import costs ~1.3 s per stage process, and a
    convnet encoder (the CPU default) never needs it."""
    from torchvision import models

    return models


SMALL_WIDTHS = (16, 32, 64, 128)  # resnet_small: ResNet-18's block layout at 1/4 of its widths


def resnet_small() -> nn.Module:
    """ResNet-18's BasicBlock layout [2, 2, 2, 2] at widths 16-32-64-128 with a 3x3 stem.

    The CPU default's encoder: ~1/4 of ResNet-18's multiply-adds at 64 px and 1/16 of its
    parameters, while the 3x3 stride-1 stem conv + max-pool keeps twice ResNet-18's spatial
    resolution in every stage (the marking that decides the class is a few pixels wide).
    Built from torchvision's own ResNet and BasicBlock, so every other code path is unchanged.
    """
    models = _models()
    net = models.resnet18(weights=None)
    w = SMALL_WIDTHS
    net.conv1 = nn.Conv2d(3, w[0], kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(w[0])
    net.inplanes = w[0]
    for i, width in enumerate(w):
        setattr(net, f"layer{i + 1}", net._make_layer(models.resnet.BasicBlock, width, 2, stride=1 if i == 0 else 2))
    net.fc = nn.Linear(w[-1], 1000)
    for m in net.modules():  # torchvision's ResNet initialisation, reapplied to the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


CONVNET_WIDTHS = (32, 64, 128, 256)
NARROW_WIDTHS = (16, 32, 64, 128)  # convnet_narrow: half the widths, ~1/4 of the multiply-adds, h of 128 dims


class ConvNet(nn.Module):
    """Four 3x3 conv-BN-ReLU blocks with 2x2 max-pools between them (widths 32-64-128-256).

    The family of the small CNN that `tests/test_synthetic.py` trains to show that the marking is
    learnable: no residual stages, no strided convs, full resolution for the first block. It keeps
    ResNet's attribute names (conv1, bn1, maxpool, layer1-4, avgpool, fc), so `forward_maps`,
    Grad-CAM and `init` loading treat it like the ResNets.
    """

    def __init__(self, widths: tuple[int, ...] = CONVNET_WIDTHS):
        super().__init__()

        def block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
            layers = [nn.MaxPool2d(2)] if pool else []
            return nn.Sequential(*layers, nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        w = widths
        self.conv1 = nn.Conv2d(3, w[0], 3, padding=1, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True), nn.Identity()
        self.layer1 = block(w[0], w[1], pool=True)
        self.layer2 = block(w[1], w[2], pool=True)
        self.layer3 = block(w[2], w[3], pool=True)
        self.layer4 = nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Backbone(nn.Module):
    """ResNet trunk + global pool. `dim` is the size of h (512 for ResNet-18, 2048 for ResNet-50).

    `pool`: "avg" (torchvision's) or "max": a detail covering ~3 % of the image is diluted 30x by
    an average over the last feature map, not by a maximum (measured in docs/findings.md).
    """

    def __init__(self, arch: str = "resnet18", stem: str = "standard", pool: str = "avg"):
        super().__init__()
        net = {"resnet_small": resnet_small, "convnet": ConvNet, "convnet_narrow": lambda: ConvNet(NARROW_WIDTHS)}.get(
            arch, lambda: getattr(_models(), arch)(weights=None)
        )()
        if stem == "small" and arch.startswith("convnet"):
            raise ValueError("stem 'small' is for the ResNets; convnet already keeps full resolution in its first block")
        if stem == "small" and arch == "resnet_small":
            net.maxpool = nn.Identity()  # full resolution in layer1
        elif stem == "small":
            # Low-resolution stem (CIFAR-style): keeps spatial detail that a stride-4 stem destroys at ≤64 px.
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        if pool == "max":
            net.avgpool = nn.AdaptiveMaxPool2d(1)
        elif pool != "avg":
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.arch, self.stem, self.pool = arch, stem, pool

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
        weights = _models().get_model_weights(backbone.arch).IMAGENET1K_V1
        try:  # torch hub's cache first; downloads only where there is internet
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # noqa: BLE001 - no network, proxy, corrupt download: one actionable message
            raise FileNotFoundError(
                f"pretrain.init: imagenet: could not load {weights} ({type(e).__name__}). " + IMAGENET_HINT.format(arch=backbone.arch)
            ) from None
        _load_trunk(backbone, state, "ImageNet")
        return
    _load_trunk(backbone, read_init_state(init, backbone.arch), init)


def _load_trunk(backbone: Backbone, state: dict, source: str) -> None:
    """Load a ResNet state_dict into the trunk (classifier dropped); mismatches fail naming the keys."""
    state = {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items() if not k.startswith("fc.")}
    if backbone.stem == "small":
        state.pop("conv1.weight", None)  # the small stem has a different first conv; it starts from scratch
    try:
        missing, unexpected = backbone.net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: another architecture or width
        detail = str(e).split("\n\t")[1:4]
        raise ValueError(f"pretrain.init: {source} does not fit {backbone.arch}: {'; '.join(detail)}") from None
    allowed_missing = {"conv1.weight"} if backbone.stem == "small" else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(
            f"pretrain.init: {source} does not fit {backbone.arch}: missing keys {sorted(set(missing) - allowed_missing)[:8]}, "
            f"unexpected keys {sorted(unexpected)[:8]}"
        )

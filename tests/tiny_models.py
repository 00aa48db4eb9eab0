"""Small stand-ins shared by the unit tests (a ResNet-18 is needlessly slow there)."""

from torch import nn


class TinyBackbone(nn.Module):
    """A stand-in for `Backbone` (x -> pooled h, with `.dim`), with a BN layer like the real one."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(
            nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x):
        return self.net(x)

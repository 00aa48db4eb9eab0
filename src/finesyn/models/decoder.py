"""Decoder g: pooled feature h -> image in the normalised input space (trained by L_R)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _up_block(c_in: int, c_out: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    for _ in range(depth):
        layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """Linear to a small seed grid, then ×2 up-convolutions to `image_size`.

    'light' = one transposed conv per scale (cheap at ≤64 px); 'deep' adds a 3×3 conv per scale
    (for 224 px). The seed grid is image_size / 2^n with n chosen so it lies in [4, 7]
    (64 -> 4, 112/224 -> 7); other sizes are resized at the end.
    """

    def __init__(self, in_dim: int, image_size: int, kind: str = "light", width: int = 256):
        super().__init__()
        n_up = max(1, int(math.floor(math.log2(image_size / 4))))
        self.seed = max(1, round(image_size / 2**n_up))
        self.image_size = image_size
        depth = 0 if kind == "light" else 1
        chans = [max(16, width // 2**i) for i in range(n_up + 1)]
        self.fc = nn.Linear(in_dim, chans[0] * self.seed**2)
        self.body = nn.Sequential(*[_up_block(chans[i], chans[i + 1], depth) for i in range(n_up)])
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)
        self.width0 = chans[0]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(h)).view(len(h), self.width0, self.seed, self.seed)
        x = self.to_rgb(self.body(x))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x

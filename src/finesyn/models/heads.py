"""Projection and prediction heads (MLPs), as in the MoCo v2 / SimSiam papers."""

from __future__ import annotations

from torch import nn


def mlp(dims: list[int], *, bn: bool = True, last_bn: bool = False, last_bn_affine: bool = True) -> nn.Sequential:
    """Linear(-BN)-ReLU blocks; the last layer has no ReLU and optionally a BN (SimSiam's projector)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=not (bn and (not last or last_bn))))
        if not last:
            if bn:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine))
    return nn.Sequential(*layers)

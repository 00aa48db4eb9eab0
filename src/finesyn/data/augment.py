"""MoCo v2 augmentations applied to a whole batch at once, with per-sample random parameters.

torchvision's transforms draw one set of parameters per call, so a batch would share a crop
and a colour jitter; per-sample calls cost more than the network at low resolution on CPU.
Here each op is a handful of tensor ops on the batch (on any device), every draw comes from
one `torch.Generator`, so resuming with the saved generator state replays the same views.
The colour ops reproduce torchvision's formulas (tests compare against them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from finesyn.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1].

    CUDA divides by a scalar as a multiplication by its reciprocal (CPU divides), so the two devices'
    float32 views differ by an ulp: a float64 model gets float64 views (`dtype`) to compare devices.
    """
    return images_uint8.permute(0, 3, 1, 2).to(dtype).div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _coin(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


def random_resized_crop(
    x, size: int, scale: tuple[float, float], ratio: tuple[float, float], flip_p: float, g: torch.Generator, rotation: float = 0.0
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (10 tries, then the whole image) + horizontal flip, by grid_sample.

    `rotation` > 0 also turns each crop by a uniform angle in ±rotation degrees about its centre
    (drawn after the crop and flip, so rotation 0 replays the same views as before it existed).
    """
    b, dev, tries = len(x), x.device, 10
    area = _uniform(b * tries, *scale, g, dev).view(b, tries)
    log_r = _uniform(b * tries, math.log(ratio[0]), math.log(ratio[1]), g, dev).view(b, tries)
    aspect = log_r.exp()
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()  # as fractions of the image side
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1, device=dev))
    pick = first.clamp(min=0).unsqueeze(1)
    w = torch.where(first >= 0, w.gather(1, pick).squeeze(1), torch.ones(b, device=dev))
    h = torch.where(first >= 0, h.gather(1, pick).squeeze(1), torch.ones(b, device=dev))
    cx = (1 - w) * torch.rand(b, generator=g, device=dev) + w / 2
    cy = (1 - h) * torch.rand(b, generator=g, device=dev) + h / 2
    flip = torch.where(_coin(b, flip_p, g, dev), -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    if rotation > 0:
        phi = _uniform(b, -math.radians(rotation), math.radians(rotation), g, dev).to(x.dtype)
        cos, sin = phi.cos(), phi.sin()
        sx, sy = theta[:, 0, 0].clone(), theta[:, 1, 1].clone()
        theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
        theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _hsv2rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB by the closed form f(n) = v - v·s·clamp(min(k, 4-k), 0, 1), k = (n + 6h) mod 6.

    Same values as torchvision's _hsv2rgb (a test checks), without its 6-way one-hot einsum,
    which cost more than the rest of the augmentation together.
    """
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6 * h, 6)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


def color_jitter(x, brightness, contrast, saturation, hue) -> torch.Tensor:
    """Per-sample factors, each shaped (B,); torchvision's formulas, fixed order b-c-s-h."""
    view = (-1, 1, 1, 1)
    x = (x * brightness.view(view)).clamp(0, 1)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (contrast.view(view) * x + (1 - contrast.view(view)) * mean).clamp(0, 1)
    x = (saturation.view(view) * x + (1 - saturation.view(view)) * grayscale(x)).clamp(0, 1)
    from torchvision.transforms._functional_tensor import _rgb2hsv  # here: extraction never pays the import

    hsv = _rgb2hsv(x)
    hsv = torch.cat([(hsv[:, :1] + hue.view(view)) % 1.0, hsv[:, 1:]], dim=1)
    return _hsv2rgb(hsv)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable blur with one sigma per sample (grouped conv), reflect padding."""
    b, c, hgt, wid = x.shape
    radius = min(int(math.ceil(3 * max_sigma)), (min(hgt, wid) - 1) // 2)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, hgt, wid), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, hgt, wid)


def _select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), new, old)


def ssl_view(images_uint8: torch.Tensor, cfg, size: int, g: torch.Generator) -> torch.Tensor:
    """One augmented, normalised view of a (B, H, W, 3) uint8 batch. `cfg` is an AugmentConfig."""
    return augment_float(to_float(images_uint8), cfg, size, g)


def reaugment(x: torch.Tensor, cfg, g: torch.Generator) -> torch.Tensor:
    """A normalised image batch (decoded images) augmented like a view, at its own size: the module's
    pair_augment. Denormalised and clamped to [0, 1] first, as colour jitter expects."""
    return augment_float(denormalize(x).clamp(0, 1), cfg, x.shape[-1], g)


def augment_float(x: torch.Tensor, cfg: AugmentConfig, size: int, g: torch.Generator) -> torch.Tensor:
    """The MoCo v2 augmentations of a (B, 3, H, W) float batch in [0, 1], normalised."""
    b, dev = len(x), x.device
    x = random_resized_crop(x, size, cfg.crop_scale, cfg.crop_ratio, cfg.flip_p, g, cfg.rotation)
    bj, cj, sj, hj = cfg.color_jitter
    jitter = _coin(b, cfg.color_jitter_p, g, dev)
    factors = [
        _uniform(b, max(0.0, 1 - bj), 1 + bj, g, dev),
        _uniform(b, max(0.0, 1 - cj), 1 + cj, g, dev),
        _uniform(b, max(0.0, 1 - sj), 1 + sj, g, dev),
        _uniform(b, -hj, hj, g, dev),
    ]
    x = _select(jitter, color_jitter(x, *factors), x)
    x = _select(_coin(b, cfg.grayscale_p, g, dev), grayscale(x).expand_as(x), x)
    blur = _coin(b, cfg.blur_p, g, dev)
    sigma = _uniform(b, *cfg.blur_sigma, g, dev)
    if cfg.blur_p > 0:
        x = _select(blur, gaussian_blur(x, sigma, cfg.blur_sigma[1]), x)
    return normalize(x)


def eval_view(images_uint8: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Deterministic view: centre crop `size` from the S×S cache (= Resize(S) + CenterCrop(size))."""
    x = to_float(images_uint8, dtype)
    top = int(round((x.shape[-2] - size) / 2.0))  # torchvision's CenterCrop rounding
    left = int(round((x.shape[-1] - size) / 2.0))
    return normalize(x[:, :, top : top + size, left : left + size].contiguous())

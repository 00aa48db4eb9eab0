"""How well the decoder g reconstructs its input: PSNR of g(h) against the image, on held-out images.

Fig. 4's pairs only teach something if g(h) renders the image's content; a decoder that has learned
only the dataset's mean colour makes flat pairs. The yardstick is the PSNR of the *dataset's mean
image* against the same images: g must beat it (by >= 3 dB, the report's criterion) to show more than the
average. Both are computed on the deterministic eval view, in [0, 1] pixel space.
"""

from __future__ import annotations

import numpy as np
import torch

from finesyn.data.augment import denormalize, eval_view


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (a perfect match is capped at 100 dB)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def reconstruction_psnr(
    backbone, decoder, images: np.ndarray, eval_idx: np.ndarray, mean_idx: np.ndarray, crop: int, batch_size: int = 256
) -> dict:
    """Mean PSNR of g(f(x)) vs x over `eval_idx`, and of the mean eval view of `mean_idx` (the
    training images) vs x; both modules are evaluated in eval mode and restored to their mode."""
    modes = backbone.training, decoder.training
    backbone.eval(), decoder.eval()
    device = next(backbone.parameters()).device
    try:
        sums = torch.zeros(3, crop, crop, dtype=torch.float64)
        for s in range(0, len(mean_idx), batch_size):
            sums += denormalize(eval_view(torch.from_numpy(np.asarray(images[mean_idx[s : s + batch_size]])), crop)).double().sum(0)
        mean_image = (sums / len(mean_idx)).float()
        rec, base = [], []
        for s in range(0, len(eval_idx), batch_size):
            v = eval_view(torch.from_numpy(np.asarray(images[eval_idx[s : s + batch_size]])), crop).to(device)
            x = denormalize(v)
            x_hat = denormalize(decoder(backbone(v)))
            rec.append(_psnr(x_hat, x).cpu())
            base.append(_psnr(mean_image.to(device).expand_as(x), x).cpu())
    finally:
        backbone.train(modes[0]), decoder.train(modes[1])
    rec_db, base_db = torch.cat(rec).mean().item(), torch.cat(base).mean().item()
    return {
        "psnr_db": round(rec_db, 3),
        "mean_image_psnr_db": round(base_db, 3),
        "gain_db": round(rec_db - base_db, 3),
        "images": int(len(eval_idx)),
        "view": f"eval view ({crop} px centre crop), [0, 1] pixels",
    }

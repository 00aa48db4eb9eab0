"""reconstruction_psnr: g(h) vs the image, against the dataset's mean image as the yardstick."""

import math

import numpy as np
import torch
from torch import nn

from finesyn.data.augment import normalize
from finesyn.pairs.reconstruction import reconstruction_psnr


class _Flatten(nn.Module):
    """An 'encoder' whose h is the normalised image itself: a decoder can then invert it exactly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.flatten(1)


class _Unflatten(nn.Module):
    def __init__(self, size, fixed=None):
        super().__init__()
        self.size, self.fixed = size, fixed

    def forward(self, h):
        if self.fixed is not None:  # a decoder that ignores h and draws one image
            return self.fixed.expand(len(h), -1, -1, -1)
        return h.view(len(h), 3, self.size, self.size)


def _images(n=40, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_a_decoder_that_inverts_h_beats_the_mean_image_and_one_that_draws_the_mean_ties_it():
    imgs, size = _images(), 8
    tr, te = np.arange(30), np.arange(30, 40)
    exact = reconstruction_psnr(_Flatten(), _Unflatten(size), imgs, te, tr, size)
    assert exact["psnr_db"] > 60 and exact["gain_db"] > 40
    mean = torch.from_numpy(imgs[tr]).float().div(255).mean(0).permute(2, 0, 1)
    drawn = reconstruction_psnr(_Flatten(), _Unflatten(size, normalize(mean[None])), imgs, te, tr, size)
    assert abs(drawn["gain_db"]) < 1e-3  # the mean image, decoded: no gain over the yardstick


def test_mean_image_psnr_matches_the_formula():
    imgs, size = _images(12, 4, seed=3), 4
    tr, te = np.arange(8), np.arange(8, 12)
    out = reconstruction_psnr(_Flatten(), _Unflatten(size), imgs, te, tr, size)
    x = imgs.astype(np.float64) / 255
    mse = ((x[te] - x[tr].mean(0)) ** 2).reshape(4, -1).mean(1)
    assert math.isclose(out["mean_image_psnr_db"], float(np.mean(-10 * np.log10(mse))), abs_tol=2e-3)  # float32 pixels, rounded to 1e-3 dB
    assert out["images"] == 4


def test_modes_are_restored():
    enc, dec = _Flatten().train(), _Unflatten(8).eval()
    reconstruction_psnr(enc, dec, _images(), np.arange(30, 40), np.arange(30), 8)
    assert enc.training and not dec.training

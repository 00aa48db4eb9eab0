"""Batched per-sample augmentations against torchvision's per-image reference implementations."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from finesyn.config import AugmentConfig
from finesyn.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    color_jitter,
    eval_view,
    gaussian_blur,
    normalize,
    random_resized_crop,
    ssl_view,
    to_float,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def float_images(b: int = 4, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=gen(seed))


def uint8_images(b: int = 4, size: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, size, size, 3), generator=gen(seed), dtype=torch.uint8)


def tv_normalize(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(x, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


# ----------------------------------------------------------------------------- colour
def test_color_jitter_matches_torchvision_per_sample():
    x = float_images(5)
    brightness = torch.tensor([0.6, 1.0, 1.4, 0.8, 1.2])
    contrast = torch.tensor([1.3, 0.6, 1.0, 1.4, 0.7])
    saturation = torch.tensor([0.6, 1.4, 1.1, 0.0, 1.0])
    hue = torch.tensor([-0.1, 0.05, 0.0, 0.1, -0.03])
    got = color_jitter(x, brightness, contrast, saturation, hue)
    assert got.shape == x.shape
    for i in range(len(x)):
        ref = TF.adjust_brightness(x[i], float(brightness[i]))
        ref = TF.adjust_contrast(ref, float(contrast[i]))
        ref = TF.adjust_saturation(ref, float(saturation[i]))
        ref = TF.adjust_hue(ref, float(hue[i]))
        torch.testing.assert_close(got[i], ref, rtol=0, atol=1e-5, msg=f"sample {i}")


def test_color_jitter_with_neutral_factors_is_the_identity():
    x = float_images(3)
    ones, zeros = torch.ones(3), torch.zeros(3)
    torch.testing.assert_close(color_jitter(x, ones, ones, ones, zeros), x, rtol=0, atol=1e-5)


def test_color_jitter_factors_are_not_shared_across_the_batch():
    x = float_images(1).expand(2, -1, -1, -1)
    out = color_jitter(x, torch.tensor([1.0, 1.3]), torch.ones(2), torch.ones(2), torch.zeros(2))
    torch.testing.assert_close(out[0], x[0], rtol=0, atol=1e-5)
    assert not torch.allclose(out[1], x[1], atol=1e-3)


# ----------------------------------------------------------------------------- eval view
@pytest.mark.parametrize("src, size", [(20, 16), (21, 16), (20, 13), (16, 16)])
def test_eval_view_is_torchvision_center_crop_and_normalisation(src, size):
    img = uint8_images(3, src)
    x = img.permute(0, 3, 1, 2).float() / 255
    expected = tv_normalize(TF.center_crop(x, [size, size]))
    got = eval_view(img, size)
    assert got.shape == (3, 3, size, size)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # and the same through the uint8 torchvision pipeline
    pipe = v2.Compose([v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(got, pipe(img.permute(0, 3, 1, 2)), rtol=0, atol=1e-5)


def test_extraction_builds_a_float64_models_view_in_float64():
    """A float64 model (the device comparisons of tests/test_cuda.py) must see the view computed in
    float64: a float32 view is off by float32 rounding, which CUDA and the CPU round differently
    (CUDA divides by 255 as a multiplication by 1/255), far above a float64 bound."""
    from tolerances import float64_default

    from finesyn.eval.features import extract_features
    from finesyn.models.backbone import Backbone

    img = uint8_images(4, 20).numpy()
    seen: list[torch.Tensor] = []
    with float64_default():
        backbone = Backbone("convnet", "standard", "max")
    stem = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    handle = stem.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        extract_features(backbone, img, np.arange(4), 16, device="cpu")
    finally:
        handle.remove()
    x = img.transpose(0, 3, 1, 2)[:, :, 2:18, 2:18].astype(np.float64) / 255
    exact = (x - np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1)) / np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    u64 = np.finfo(np.float64).eps / 2
    assert seen[0].dtype == torch.float64
    # each side: three correctly rounded float64 operations, /255 (error <= u, |x| <= 1), -mean
    # (<= u + u), /std (std >= 0.224, |result| < 2.7): 2u / 0.224 + 2.7u < 12u; both sides: 24u
    # (a float32 view is ~1e8 u off)
    assert (np.abs(seen[0].numpy() - exact) <= 24 * u64).all()


# ----------------------------------------------------------------------------- crop + flip
def test_random_resized_crop_is_deterministic_given_the_seed():
    x = float_images(4, 16)
    a = random_resized_crop(x, 8, (0.2, 1.0), (3 / 4, 4 / 3), 0.5, gen(7))
    b = random_resized_crop(x, 8, (0.2, 1.0), (3 / 4, 4 / 3), 0.5, gen(7))
    c = random_resized_crop(x, 8, (0.2, 1.0), (3 / 4, 4 / 3), 0.5, gen(8))
    assert a.shape == (4, 3, 8, 8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_full_crop_without_flip_is_the_identity():
    x = float_images(3, 16)
    out = random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), 0.0, gen(0))
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_full_crop_with_flip_is_the_mirrored_image():
    x = float_images(3, 16)
    out = random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), 1.0, gen(0))
    torch.testing.assert_close(out, x.flip(-1), rtol=0, atol=1e-5)


def test_crops_differ_per_sample():
    x = float_images(1, 16).expand(4, -1, -1, -1)
    out = random_resized_crop(x, 8, (0.1, 0.5), (3 / 4, 4 / 3), 0.5, gen(3))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[2], out[3])


def test_a_quarter_area_crop_is_a_half_side_window_at_native_resolution():
    """scale 1/4, ratio 1 on 64 px -> a 32 px window; resized to 32 it is one input pixel per output
    pixel: on a ramp of step 1/63 the window spans 31/63, horizontally and vertically."""
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64).contiguous()
    for img, line in ((ramp, lambda o: o[:, 0, 0, :]), (ramp.transpose(2, 3).contiguous(), lambda o: o[:, 0, :, 0])):
        out = line(random_resized_crop(img, 32, (0.25, 0.25), (1.0, 1.0), 0.0, gen(0)))
        torch.testing.assert_close(out[:, -1] - out[:, 0], torch.full((2,), 31 / 63), rtol=0, atol=1e-4)
        assert torch.all(out[:, 1:] > out[:, :-1])  # not flipped
        assert torch.all(out >= 0) and torch.all(out <= 1)


def test_rotation_turns_the_crop_about_its_centre_by_at_most_the_bound():
    """A full crop of a centred horizontal bar turned by phi in ±30°: the bar's pixels lie on a line
    through the centre whose slope angle is within ±30° and not always 0 (the draws differ per sample)."""
    size = 33
    img = torch.zeros(64, 3, size, size)
    img[:, :, 15:18, 2:-2] = 1.0  # horizontal bar through the centre
    out = random_resized_crop(img, size, (1.0, 1.0), (1.0, 1.0), 0.0, gen(5), rotation=30.0)[:, 0]
    yy, xx = torch.meshgrid(torch.arange(size) - 16.0, torch.arange(size) - 16.0, indexing="ij")
    w = (out > 0.5).float()
    cxx, cyy, cxy = (w * xx * xx).sum((1, 2)), (w * yy * yy).sum((1, 2)), (w * xx * yy).sum((1, 2))
    angle = 0.5 * torch.atan2(2 * cxy, cxx - cyy).rad2deg()  # principal axis of the bar's pixels
    assert angle.abs().max() <= 30.0 + 3.0  # the bar's 3-px width bounds the axis estimate to a few degrees
    assert angle.abs().max() > 15.0 and angle.std() > 5.0
    torch.testing.assert_close((w * xx).sum((1, 2)) / w.sum((1, 2)), torch.zeros(64), rtol=0, atol=0.5)  # about the centre


def test_rotation_zero_draws_nothing_extra():
    """rotation = 0 replays the views of the code before rotation existed (same generator stream)."""
    x = float_images(4, 16)
    g1, g2 = gen(9), gen(9)
    random_resized_crop(x, 8, (0.2, 1.0), (3 / 4, 4 / 3), 0.5, g1, rotation=0.0)
    random_resized_crop(x, 8, (0.2, 1.0), (3 / 4, 4 / 3), 0.5, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


# ----------------------------------------------------------------------------- blur
def test_blur_with_a_tiny_sigma_is_the_identity():
    x = float_images(2, 12)
    torch.testing.assert_close(gaussian_blur(x, torch.full((2,), 0.1), 2.0), x, rtol=0, atol=1e-6)


def test_blur_with_a_large_sigma_lowers_the_variance():
    x = float_images(2, 16)
    y = gaussian_blur(x, torch.full((2,), 2.0), 2.0)
    assert torch.all(y.var(dim=(2, 3)) < 0.5 * x.var(dim=(2, 3)))
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=0.02)


def test_blur_matches_torchvision_with_each_samples_own_sigma():
    x = float_images(3, 16)
    sigma = torch.tensor([0.1, 1.0, 2.0])
    got = gaussian_blur(x, sigma, 2.0)
    k = 2 * 6 + 1  # radius ceil(3·max_sigma) = 6
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [k, k], [float(sigma[i]), float(sigma[i])])
        torch.testing.assert_close(got[i], ref, rtol=0, atol=1e-5, msg=f"sample {i}")
        torch.testing.assert_close(got[i : i + 1], gaussian_blur(x[i : i + 1], sigma[i : i + 1], 2.0), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- the whole view
def test_ssl_view_shape_dtype_and_determinism():
    cfg = AugmentConfig()
    img = uint8_images(4, 20)
    g = gen(11)
    state = g.get_state()
    a = ssl_view(img, cfg, 16, g)
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32 and torch.isfinite(a).all()
    g.set_state(state)
    assert torch.equal(ssl_view(img, cfg, 16, g), a)  # replaying the generator replays the view
    assert not torch.allclose(ssl_view(img, cfg, 16, g), a)  # the advanced generator draws a new view
    assert torch.equal(ssl_view(img, cfg, 16, gen(11)), a)
    assert not torch.allclose(ssl_view(img, cfg, 16, gen(12)), a)


def test_ssl_view_without_augmentation_is_the_normalised_image():
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0)
    img = uint8_images(2, 16)
    torch.testing.assert_close(ssl_view(img, cfg, 16, gen(0)), normalize(to_float(img)), rtol=0, atol=1e-5)
    torch.testing.assert_close(normalize(to_float(img)), tv_normalize(img.permute(0, 3, 1, 2).float() / 255))


def test_ssl_view_grayscale_always():
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)
    x = ssl_view(uint8_images(2, 16), cfg, 16, gen(0))
    rgb = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb[:, 0], rgb[:, 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(rgb[:, 0], rgb[:, 2], rtol=0, atol=1e-5)

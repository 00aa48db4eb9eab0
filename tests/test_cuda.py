"""The CUDA paths: a training step, mixed precision, channels_last, extraction, the monitor, retrieval
and the SGD probe on a GPU. Skipped where torch sees no CUDA device (the development machines and
CI have none); `benchmarks/cuda_check.sh` runs this file on a GPU machine.

Device-vs-CPU comparisons run in float64, where both sides compute the same exact quantity in
another summation order (cuDNN / cuBLAS vs oneDNN / BLAS): they must agree to SAME_STEP_REL
(tolerances.py), whatever the GPU. Mixed precision is checked for what it promises (bf16 compute,
float32 weights, finite losses), not against float32 numbers: it is not the same computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import SAME_STEP_REL, U32, float64_default
from train_runner import tiny_images, tiny_spec, two_colour_images

from finesyn.data.augment import ssl_view
from finesyn.eval.features import extract_features
from finesyn.eval.monitor import KnnMonitor, carve_validation
from finesyn.eval.probe_sgd import sgd_probe
from finesyn.eval.retrieval import retrieval_metrics
from finesyn.models.backbone import Backbone
from finesyn.train import build_models, pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = ["mocov2", "simsiam", "byol", "simclr", "supervised"]
DEFAULT_ENCODER = dict(backbone="convnet", pool="max")  # params.yaml's


def _views_from_cpu(cfg, crop):
    """The normal augmentation drawn on the CPU (a CUDA generator draws another stream) in float64,
    then moved to the batch's device: both devices train on identical views."""

    def views(batch, idx, step):
        g = torch.Generator().manual_seed(step)
        cpu = batch.cpu()
        return tuple(ssl_view(cpu, cfg.augment, crop, g).double().to(batch.device) for _ in range(2))

    return views


def _step64(tmp_path, images, labels, method, device, channels_last):
    spec = tiny_spec(
        tmp_path, method=method, synth=False, epochs=1, device=device, amp=False, channels_last=channels_last, **DEFAULT_ENCODER
    )
    with float64_default():
        return pretrain(images, spec, labels=labels, num_classes=2, views=_views_from_cpu(spec.cfg, spec.crop_size)), spec


@pytest.mark.parametrize("method", METHODS)
def test_a_cuda_step_is_the_cpu_step(tmp_path, method):
    """One step of each method (channels_last on the GPU, as the default trains) equals the CPU's
    within the float64 rounding bound: device placement of the queue, momentum encoders, targets,
    pinned copies and BN statistics handled the same way on both."""
    images, labels = tiny_images(8), np.arange(8) % 2
    cpu, spec = _step64(tmp_path / "cpu", images, labels, method, "cpu", False)
    gpu, _ = _step64(tmp_path / "gpu", images, labels, method, "cuda", True)
    assert cpu.steps == gpu.steps == 1
    for term, value in cpu.history[0].items():
        if term.startswith("L_"):
            assert gpu.history[0][term] == pytest.approx(value, rel=SAME_STEP_REL, abs=0), term
    with float64_default():
        init = build_models(spec, len(images), 2)[1].state_dict()
    a, b = cpu.method.state_dict(), gpu.method.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k].cpu()) for k in a if not a[k].is_floating_point())  # queue indices, counters
    delta = {k: (a[k] - init[k], b[k].cpu() - init[k]) for k in a if a[k].is_floating_point()}
    step_scale = max(da.abs().max() for da, _ in delta.values())
    for k, (da, db) in delta.items():
        # a tensor whose gradient cancels exactly (a bias before BN) moves only by the step's rounding
        # noise: judged against the step's scale, every other tensor against its own update
        scale = da.abs().max() if da.abs().max() > step_scale * 2**-20 else step_scale
        assert (da - db).abs().max() <= SAME_STEP_REL * scale, k


def test_amp_trains_in_bf16_with_float32_weights_and_the_monitor_votes(tmp_path):
    """The default's CUDA run: AMP + channels_last + the module + the learning monitor with
    `device: cuda` (whose vote took the torch device name and failed before knn_device)."""
    images, labels = two_colour_images(64)
    fit, val = carve_validation(np.arange(len(images)), labels, 0.25, seed=0)
    monitor = KnnMonitor(images, labels, fit, val, 32, k=5, device="cuda", channels_last=True)
    seen: list = []

    def hook(mod, args, out):
        # autocast casts inside the op, so the stem's *output* shows the precision; the monitor
        # (eval mode) extracts in float32 on purpose and is left out
        if isinstance(mod, torch.nn.Conv2d) and mod.in_channels == 3 and mod.training:
            seen.append((out.dtype, out.is_contiguous(memory_format=torch.channels_last)))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        spec = tiny_spec(tmp_path, epochs=2, device="cuda", amp=True, channels_last=True, monitor_every_steps=3, **DEFAULT_ENCODER)
        result = pretrain(images, spec, fit, monitor=monitor)
    finally:
        handle.remove()
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert seen and all(dtype == expected and nhwc for dtype, nhwc in seen), set(seen)
    assert all(np.isfinite(v) for rec in result.history for k, v in rec.items() if k.startswith("L_"))
    for module in (result.method, result.synth):
        for k, v in module.state_dict().items():
            assert not v.is_floating_point() or v.dtype == torch.float32, k  # master weights stay float32
            assert v.is_contiguous(), k  # returned in the default layout: encoder.pt is the same format
    assert [r["step"] for r in result.monitor] == [0, 3, 6, 9, 12]  # 48 fit images, batch 8: 6 steps an epoch
    assert all(r["val/knn5_top1"] > 90 for r in result.monitor), result.monitor


def test_extraction_on_cuda_is_the_cpu_extraction():
    """float64 backbone: the features (rounded to float32 by extract_features) differ by at most the
    float64 bound plus one float32 rounding on each side."""
    images, _ = two_colour_images(40)
    torch.manual_seed(0)
    with float64_default():
        backbone = Backbone("convnet", "standard", "max")
        cpu = extract_features(backbone, images, np.arange(40), 32, batch_size=16, device="cpu")
        gpu = extract_features(backbone, images, np.arange(40), 32, batch_size=16, device="cuda", channels_last=True)
    bound = (2 * U32 + SAME_STEP_REL) * np.abs(cpu.astype(np.float64)) + np.finfo(np.float32).tiny
    assert (np.abs(gpu.astype(np.float64) - cpu) <= bound).all()


def _lattice_features(n: int, dim: int = 16, nonzero: int = 4, seed: int = 0) -> np.ndarray:
    """Vectors of `nonzero` entries ±1: normalised, every entry is ±0.5 and every cosine a multiple of
    1/4, exact in float32 in any summation order; so both devices must rank identically (ties many,
    broken by index)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, dim), np.float32)
    for row in x:
        row[rng.choice(dim, nonzero, replace=False)] = rng.choice([-1.0, 1.0], nonzero)
    return x


@pytest.mark.parametrize("gallery", [False, True])
def test_retrieval_on_cuda_equals_the_cpu_exactly(gallery):
    q, qy = _lattice_features(300), np.random.default_rng(1).integers(0, 5, 300)
    g, gy = (_lattice_features(500, seed=2), np.random.default_rng(3).integers(0, 5, 500)) if gallery else (None, None)
    kw = dict(ks=(1, 5, 10), map_at_r=True, chunk_size=64, engine="sort")
    cpu = retrieval_metrics(q, qy, g, gy, device="cpu", **kw)
    gpu = retrieval_metrics(q, qy, g, gy, device="gpu", **kw)
    assert gpu.pop("device") != cpu.pop("device")
    assert gpu == cpu


def test_the_sgd_probe_trains_on_cuda_and_leaves_the_backbone_bit_identical():
    images, labels = two_colour_images(96)
    torch.manual_seed(0)
    backbone = Backbone("convnet", "standard", "max")
    train, test = np.arange(64), np.arange(64, 96)
    out = sgd_probe(backbone, images, train, labels[train], test, labels[test], num_classes=2, crop_size=32,
                    lr=1.0, epochs=6, milestones=(4, 5), batch_size=16, device="cuda")  # fmt: skip
    assert out["device"].startswith("cuda")
    assert out["sanity_check"]["passed"] and out["sanity_check"]["tensors_checked"] > 0
    assert out["top1"] > 90, out["top1"]

"""Scale-out switches of `pretrain`: channels_last, torch.compile, pinned host-to-device copies,
and MoCo's shuffle_bn from params. All on the CPU with the tiny run of train_runner.

torch.compile is exercised for real (TorchDynamo traces the backbones) but with the "eager"
backend: inductor's C++ code generation takes ~90 s for this run on the 2-core development
machine, which is too slow for a unit test (`compile: true` with inductor was run by hand).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import yaml
from tiny_models import TinyBackbone
from tolerances import SAME_STEP_REL, gamma32
from tolerances import float64_default as _float64_default
from train_runner import tiny_images, tiny_spec

from finesyn import device as device_mod
from finesyn import train
from finesyn.config import parse_params
from finesyn.data.augment import eval_view, ssl_view
from finesyn.eval import features
from finesyn.methods import build_method
from finesyn.models.backbone import Backbone
from finesyn.run_identity import run_settings
from finesyn.train import build_models, encoder_artifact, load_latest_checkpoint, pretrain


class _Stop(Exception):
    pass


def _train(tmp_path, images, **overrides):
    return pretrain(images, tiny_spec(tmp_path, **overrides))


def _record_image_convs(sink: list):
    """A global forward pre-hook on every conv fed with images (the backbones' first conv):
    records (input is NHWC, weight is NHWC)."""
    cl = torch.channels_last

    def hook(mod, args):
        if isinstance(mod, torch.nn.Conv2d) and mod.in_channels == 3:
            sink.append((args[0].is_contiguous(memory_format=cl), mod.weight.is_contiguous(memory_format=cl)))

    return torch.nn.modules.module.register_module_forward_pre_hook(hook)


@pytest.fixture
def float64_default():
    with _float64_default():
        yield


def _float64_views(cfg, crop):
    """The normal augmentation, cast to float64 (it converts uint8 to float32), seeded per step."""

    def views(batch, idx, step):
        g = torch.Generator().manual_seed(step)
        return tuple(ssl_view(batch, cfg.augment, crop, g).double() for _ in range(2))

    return views


def _train64(tmp_path, images, **overrides):
    spec = tiny_spec(tmp_path, backbone="resnet_small", **overrides)  # resnet18's layout at 1/4 width: 4x faster in float64
    return pretrain(images, spec, views=_float64_views(spec.cfg, spec.crop_size))


def test_channels_last_step_matches_contiguous_and_returns_default_layout(tmp_path, float64_default):
    """The same step in either layout, compared in float64 so that only a real difference (weights,
    views or state handled differently) exceeds the rounding bound SAME_STEP_REL (tolerances.py)."""
    images = tiny_images(8)  # batch 8, one epoch: exactly one step (losses of the same initial weights)
    seen: list = []
    ref = _train64(tmp_path / "ref", images, epochs=1)
    handle = _record_image_convs(seen)
    try:
        cl = _train64(tmp_path / "cl", images, epochs=1, channels_last=True)
    finally:
        handle.remove()
    assert ref.steps == cl.steps == 1
    # the backbones (online and key, views and generated pairs) ran NHWC with NHWC weights
    assert seen and all(x and w for x, w in seen), seen
    for term in ("L_C", "L_R", "L_Cp"):
        assert cl.history[0][term] == pytest.approx(ref.history[0][term], rel=SAME_STEP_REL, abs=0), term
    init = build_models(tiny_spec(tmp_path, backbone="resnet_small"), len(images))[1].state_dict()
    a, b = ref.method.state_dict(), cl.method.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and (not a[k].is_floating_point() or a[k].dtype == torch.float64), k
        da, db = a[k] - init[k], b[k] - init[k]
        assert (da - db).abs().max() <= SAME_STEP_REL * da.abs().max(), k
    # returned in the default layout, so encoder.pt is the same format (and bytes) whatever the flag
    assert all(v.is_contiguous() for m in (cl.method, cl.synth) for v in m.state_dict().values())


@pytest.mark.parametrize("cin,cout,k,stride", [(3, 64, 7, 2), (16, 16, 3, 1)])  # resnet18's stem; a block conv
def test_float32_channels_last_conv_is_within_its_rounding_bound(cin, cout, k, stride):
    """The float32 kernels the flag selects compute the same conv (forward and weight gradient)
    within 2*gamma_n*(|x| * |w|) elementwise, n the terms of each sum: what lets the float64 step
    test above stand for float32 runs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, cin, 32, 32, generator=g)
    w = torch.randn(cout, cin, k, k, generator=g) * 0.1
    cl, pad = torch.channels_last, k // 2
    xs, ws = (t.contiguous(memory_format=cl).requires_grad_() for t in (x, w))
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
    ys = torch.nn.functional.conv2d(xs, ws, stride=stride, padding=pad)
    assert ys.is_contiguous(memory_format=cl)
    fwd_bound = 2 * gamma32(cin * k * k) * torch.nn.functional.conv2d(x.double().abs(), w.double().abs(), stride=stride, padding=pad)
    assert ((ys.detach().double() - y.double()).abs() <= fwd_bound).all()
    dy = torch.randn(y.shape, generator=g)
    ys.backward(dy.contiguous(memory_format=cl))
    gw = torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=pad)
    n = dy.shape[0] * dy.shape[2] * dy.shape[3]
    bwd_bound = 2 * gamma32(n) * torch.nn.grad.conv2d_weight(x.double().abs(), w.shape, dy.double().abs(), stride=stride, padding=pad)
    assert ((ws.grad.double() - gw.double()).abs() <= bwd_bound).all()


def test_channels_last_is_not_part_of_the_encoder_identity_but_shuffle_bn_is(repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    base = run_settings(parse_params(copy.deepcopy(raw)), "synthetic", "mocov2")
    how = copy.deepcopy(raw)
    how["pretrain"].update(channels_last=True, compile=True)
    assert run_settings(parse_params(how), "synthetic", "mocov2") == base
    what = copy.deepcopy(raw)
    what["pretrain"].setdefault("methods", {}).setdefault("mocov2", {})["shuffle_bn"] = True
    assert run_settings(parse_params(what), "synthetic", "mocov2") != base


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the eager backend, counting the calls that go through compiled code."""
    real = torch.compile
    calls = {"compiled": 0, "used": 0}

    def spy(fn, *args, **kwargs):
        calls["compiled"] += 1
        compiled = real(fn, *args, **{**kwargs, "backend": "eager"})
        if isinstance(fn, torch.nn.Module):  # torch.compile(module): an OptimizedModule wrapper
            return compiled

        def counted(*a, **k):
            calls["used"] += 1
            return compiled(*a, **k)

        return counted

    monkeypatch.setattr(torch, "compile", spy)
    return calls


def test_compile_is_used_and_its_checkpoint_resumes_without_it(tmp_path, eager_compile):
    images = tiny_images()
    ckpt = tmp_path / "ck"

    def stop_at_3(step, total):
        if step == 3:
            raise _Stop  # after step 3, before its checkpoint: the newest is step 2

    with pytest.raises(_Stop):
        pretrain(images, tiny_spec(ckpt, synth=False, epochs=1, compile=True), progress=stop_at_3)
    assert eager_compile["compiled"] == 2  # MoCo: the online and the key backbone
    assert eager_compile["used"] >= 2 * 3  # every step ran both through the compiled code
    state = load_latest_checkpoint(tiny_spec(ckpt))
    assert state["step"] == 2
    assert not any("_orig_mod" in k for k in state["method"])

    used = eager_compile["used"]
    resumed = pretrain(images, tiny_spec(ckpt, synth=False, epochs=1, compile=False))
    assert eager_compile["used"] == used and eager_compile["compiled"] == 2  # compile=false: eager modules
    assert resumed.resumed_from == 2 and resumed.steps == 5
    # encoder.pt has the keys of an uncompiled backbone: extract's strict load accepts it
    blob = torch.load(io.BytesIO(encoder_artifact(resumed, tiny_spec(ckpt), {})), weights_only=False)
    assert blob["backbone"].keys() == Backbone(blob["arch"], blob["stem"]).state_dict().keys()


def test_host_to_device_pins_on_cuda_only(monkeypatch):
    batch = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    calls: list = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: calls.append("pin") or self)
    assert device_mod.host_to_device(batch, torch.device("cpu")) is batch  # CPU: unchanged, never pinned
    assert calls == []
    # CUDA (faked: no GPU here): pinned first, then an asynchronous copy
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append(("to", a, k)) or self)
    device_mod.host_to_device(batch, torch.device("cuda"))
    assert calls == ["pin", ("to", (torch.device("cuda"),), {"non_blocking": True})]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_to_device_on_a_real_gpu():
    batch = torch.arange(24, dtype=torch.uint8).reshape(2, 2, 2, 3)
    out = device_mod.host_to_device(batch, torch.device("cuda"))
    assert out.is_cuda and torch.equal(out.cpu(), batch)


def test_pretrain_and_extract_copy_batches_through_host_to_device(tmp_path, monkeypatch):
    seen: list = []

    def spy(batch, dev):
        seen.append((batch.dtype, dev.type))
        return device_mod.host_to_device(batch, dev)

    monkeypatch.setattr(train, "host_to_device", spy)
    monkeypatch.setattr(features, "host_to_device", spy)
    pretrain(tiny_images(8), tiny_spec(tmp_path, synth=False, epochs=1, device="cpu"))
    # images cross as uint8 (normalised on the device); MoCo's dataset indices (own-key masking) as int64
    assert seen == [(torch.uint8, "cpu"), (torch.int64, "cpu")]
    seen.clear()
    features.extract_features(TinyBackbone(), tiny_images(8), np.arange(8), 32, batch_size=4, device="cpu")
    assert seen == [(torch.uint8, "cpu")] * 2


def test_extract_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    images, idx = tiny_images(8), np.arange(8)
    ref = features.extract_features(TinyBackbone().eval(), images, idx, 24, device="cpu")
    torch.manual_seed(0)
    model, seen = TinyBackbone(), []
    handle = _record_image_convs(seen)
    try:
        cl = features.extract_features(model, images, idx, 24, device="cpu", channels_last=True)
    finally:
        handle.remove()
    assert seen and all(x and w for x, w in seen), seen  # NHWC images into NHWC weights
    np.testing.assert_allclose(cl, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("where", ["pretrain", "override"])
def test_shuffle_bn_reaches_the_moco_object_from_params(repo_root, where):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert build_method("mocov2", TinyBackbone(), parse_params(copy.deepcopy(raw)).pretrain_for("mocov2"), 64).shuffle_bn is False
    if where == "pretrain":
        raw["pretrain"].setdefault("methods", {}).setdefault("mocov2", {})["shuffle_bn"] = True
    else:
        raw["experiments"]["mocov2"]["overrides"] = {"methods": {"mocov2": {"shuffle_bn": True}}}
    cfg = parse_params(raw).pretrain_for("mocov2")
    assert build_method("mocov2", TinyBackbone(), cfg, 64).shuffle_bn is True


@pytest.mark.parametrize("arch", ["convnet", "resnet_small"])
def test_extract_folds_batchnorm_into_the_convs_without_changing_the_features(arch):
    """extract's model has no BatchNorm left (folded into the convs: fewer passes over the maps) and computes
    the backbone's eval function: in float64 the two orders agree to SAME_STEP_REL of the features' scale."""
    torch.manual_seed(0)
    with _float64_default():
        backbone = Backbone(arch, "standard", "max").eval()
        for bn in (m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # trained-looking statistics
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    fused = features.inference_model(backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())  # a copy: the encoder is untouched
    images, idx = tiny_images(6), np.arange(6)
    x = eval_view(torch.from_numpy(images), 32, torch.float64)
    with torch.no_grad():
        ref, folded = backbone(x).numpy(), fused(x).numpy()
    scale = np.abs(ref).max()
    np.testing.assert_allclose(folded, ref, rtol=0, atol=scale * SAME_STEP_REL)
    got = features.extract_features(backbone, images, idx, 32, device="cpu")  # rounded to float32: U32 more
    np.testing.assert_allclose(got, ref, rtol=0, atol=scale * (SAME_STEP_REL + torch.finfo(torch.float32).eps / 2))

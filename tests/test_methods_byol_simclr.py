"""BYOL and SimCLR: loss formulas, the momentum schedule, gradient isolation, and one training run each."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinyBackbone

from finesyn.config import PretrainConfig
from finesyn.methods import METHODS
from finesyn.methods.byol import BYOL, cosine_momentum, regression_loss
from finesyn.methods.simclr import SimCLR, nt_xent
from finesyn.models.heads import mlp
from finesyn.train import RunSpec, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- NT-Xent
def test_nt_xent_hand_computed_two_pairs():
    # pairs (a1, b1), (a2, b2) of 2-d unit vectors; T = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    t = 0.5
    # anchor a1: positive b1 (cos 0.6); negatives a2 (cos 0), b2 (cos 0.8). a2 is symmetric to a1.
    loss_a = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.0 / t) + math.exp(0.8 / t)))
    # anchor b1: positive a1 (cos 0.6); negatives b2 (cos 0.96), a2 (cos 0.8). b2 is symmetric to b1.
    loss_b = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.96 / t) + math.exp(0.8 / t)))
    expected = (2 * loss_a + 2 * loss_b) / 4
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-6)
    # inputs are L2-normalised inside: scaling a view changes nothing
    assert nt_xent(3 * z1, 0.5 * z2, t).item() == pytest.approx(expected, rel=1e-6)


def nt_xent_reference(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / denom)
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.2), (5, 8, 0.5), (7, 4, 1.0)])
def test_nt_xent_matches_brute_force(n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-5)


def test_nt_xent_gather_hook_reproduces_the_global_loss():
    # Two simulated ranks of 3 samples: `gather` puts the local views into the global batch (as an
    # all_gather would); the mean of the per-rank losses is then the single-process loss on all 6.
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    parts = []
    for rank in (0, 1):
        rows = slice(3 * rank, 3 * rank + 3)
        views = iter([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])  # nt_xent gathers view 1, then view 2

        def gather(local, views=views, rows=rows):
            out = next(views).clone()
            out[rows] = local
            return out

        parts.append(nt_xent(z1[rows], z2[rows], 0.3, gather=gather, rank=rank))
    assert ((parts[0] + parts[1]) / 2).item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), rel=1e-6)


# ----------------------------------------------------------------------------- BYOL
def tiny_backbone():
    torch.manual_seed(0)
    return TinyBackbone()


def test_byol_regression_loss_formula():
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    z = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 5.0]])
    expected = (2.0 + (2 - 2 / math.sqrt(2)) + 0.0) / 3  # cos = 0, 1/sqrt(2), 1
    assert regression_loss(p, z).item() == pytest.approx(expected, rel=1e-6)


def test_byol_ssl_loss_is_symmetric_formula():
    m = BYOL(tiny_backbone(), 32, 16, 32, 0.99).train()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    with torch.no_grad():
        out = m.ssl_loss(x1, x2)

        def d(p, z):
            return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1)).mean()

        p1, p2 = m.predictor(m.projector(m.backbone(x1))), m.predictor(m.projector(m.backbone(x2)))
        t1, t2 = m.target_projector(m.target_backbone(x1)), m.target_projector(m.target_backbone(x2))
        expected = 0.5 * (d(p1, t2) + d(p2, t1))
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert torch.allclose(out.h1, m.backbone(x1), atol=1e-6)


def test_byol_momentum_schedule():
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)
    m = BYOL(tiny_backbone(), 32, 16, 32, 0.99)
    assert m.momentum_at(0.0) == pytest.approx(0.99) and m.momentum_at(1.0) == pytest.approx(1.0)
    with torch.no_grad():
        for p in list(m.backbone.parameters()) + list(m.projector.parameters()):
            p.add_(1.0)
    target_before = [p.clone() for p in m.target_projector.parameters()]
    online = [p.clone() for p in m.projector.parameters()]
    m.after_step(1.0)  # tau = 1: target untouched
    assert all(torch.equal(a, b) for a, b in zip(target_before, m.target_projector.parameters()))
    m.after_step(0.0)  # tau = base
    for t0, o, t1 in zip(target_before, online, m.target_projector.parameters()):
        assert torch.allclose(t1, 0.99 * t0 + 0.01 * o, atol=1e-6)


def test_byol_target_gets_no_gradient():
    m = BYOL(tiny_backbone(), 32, 16, 32, 0.99).train()
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    out = m.ssl_loss(x1, x2)
    assert out.h1.requires_grad
    out.loss.backward()
    for name, p in m.named_parameters():
        if name.startswith("target_"):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None, name


# ----------------------------------------------------------------------------- training runs
def test_registered():
    assert METHODS["byol"] is BYOL and METHODS["simclr"] is SimCLR


@pytest.mark.parametrize("method", ["byol", "simclr"])
@pytest.mark.parametrize("synth", [False, True])
def test_one_pretraining_run(tmp_path, method, synth):
    cfg = PretrainConfig(
        epochs=1,
        batch_size=16,
        device="cpu",
        threads=1,
        log_every_steps=1,
        methods={"byol": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32}, "simclr": {"proj_hidden_dim": 32, "proj_dim": 16}},
        synth={"decoder_width": 32},
    )
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)  # one step
    result = pretrain(images, RunSpec(method, synth, cfg, 32, 0, f"{method}-{synth}", tmp_path))
    assert result.steps == 1 and len(result.history) == 1
    for rec in result.history:
        assert math.isfinite(rec["L_C"])
        if synth:
            assert math.isfinite(rec["L_R"]) and math.isfinite(rec["L_Cp"])
    # extract rebuilds the projector from projector_spec (finesyn.eval.features.load_encoder)
    assert result.method.projector_spec["dims"] == [512, 32, 16]
    mlp(**result.method.projector_spec).load_state_dict(result.method.projector.state_dict())

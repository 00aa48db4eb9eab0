"""MoCo v2 and SimSiam: loss formulas against hand-computed values, the queue, the momentum
encoder, stop-gradient, and the method registry."""

import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinyBackbone

from finesyn.config import PretrainConfig
from finesyn.methods import METHODS, SSLMethod, build_method, register
from finesyn.methods.mocov2 import MoCoV2, info_nce
from finesyn.methods.simsiam import SimSiam, negative_cosine
from finesyn.methods.supervised import Supervised
from finesyn.models.backbone import Backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(queue_size: int = 16) -> PretrainConfig:
    return PretrainConfig(
        methods={
            "mocov2": {"proj_hidden_dim": 16, "proj_dim": 4, "queue_size": queue_size, "momentum": 0.9, "temperature": 0.2},
            "simsiam": {"proj_dim": 8, "pred_hidden_dim": 4},
        }
    )


def tiny_moco(queue_size: int = 5, momentum: float = 0.9) -> MoCoV2:
    torch.manual_seed(0)
    return MoCoV2(TinyBackbone(), proj_hidden_dim=16, proj_dim=4, queue_size=queue_size, momentum=momentum, temperature=0.2)


def images(n: int, seed: int, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- InfoNCE
def test_info_nce_hand_computed():
    t = 0.5
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # query 1: positive 0.6; negatives 0 and -1 -> logits 1.2, 0, -2
    l1 = -1.2 + math.log(math.exp(1.2) + math.exp(0.0) + math.exp(-2.0))
    # query 2: positive 1; negatives 1 and 0 -> logits 2, 2, 0
    l2 = -2.0 + math.log(math.exp(2.0) + math.exp(2.0) + math.exp(0.0))
    assert info_nce(q, k, queue, t).item() == pytest.approx((l1 + l2) / 2, rel=1e-6)


def test_info_nce_is_lower_when_the_positive_matches():
    q = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    good = info_nce(q, torch.tensor([[1.0, 0.0]]), queue, 0.2)
    bad = info_nce(q, torch.tensor([[0.0, -1.0]]), queue, 0.2)
    assert good.item() < bad.item()
    # logit 1/T = 5 against 0 and -5
    assert good.item() == pytest.approx(-5 + math.log(math.exp(5) + 1 + math.exp(-5)), abs=1e-6)


# ----------------------------------------------------------------------------- the queue
def test_the_steps_keys_are_enqueued_at_the_pointer_when_the_step_ends():
    m = tiny_moco(queue_size=5)
    x1, x2 = images(3, 1), images(3, 2)
    before = m.queue.clone()
    m.ssl_loss(x1, x2)
    with torch.no_grad():
        k = F.normalize(m.key_projector(m.key_backbone(x2)), dim=1)
    assert torch.equal(m.queue, before)  # every loss of the step sees the queue without its keys
    m.after_step(0.0)
    assert torch.allclose(m.queue[:3], k, atol=1e-6)
    assert torch.equal(m.queue[3:], before[3:])
    assert int(m.queue_ptr) == 3


def test_enqueue_wraps_around_a_queue_that_is_not_a_multiple_of_the_batch():
    m = tiny_moco(queue_size=5)
    a = torch.full((3, 4), 1.0)
    b = torch.arange(12, dtype=torch.float32).view(3, 4)
    before = m.queue.clone()
    m._enqueue(a)
    assert int(m.queue_ptr) == 3
    m._enqueue(b)  # rows 3, 4, then 0
    assert int(m.queue_ptr) == 1
    assert torch.equal(m.queue[3], b[0]) and torch.equal(m.queue[4], b[1]) and torch.equal(m.queue[0], b[2])
    assert torch.equal(m.queue[1], a[1]) and torch.equal(m.queue[2], a[2])
    m._enqueue(b)  # rows 1, 2, 3
    assert int(m.queue_ptr) == 4
    assert torch.equal(m.queue[1:4], b)
    assert not torch.equal(m.queue, before)


def test_update_state_false_leaves_the_queue_untouched():
    m = tiny_moco(queue_size=5)
    m.ssl_loss(images(3, 1), images(3, 2))
    m.after_step(0.0)  # pointer at 3
    queue, ptr = m.queue.clone(), m.queue_ptr.clone()
    out1 = m.ssl_loss(images(3, 3), images(3, 4), update_state=False)
    out2 = m.ssl_loss(images(3, 3), images(3, 4), update_state=False)
    assert torch.equal(m.queue, queue) and torch.equal(m.queue_ptr, ptr)
    assert out1.loss.item() == out2.loss.item()  # a pure function of inputs and parameters


def test_a_queue_larger_than_the_dataset_is_kept_without_a_warning():
    """Own images are masked out of the negatives (below), so the queue needs no cap."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = MoCoV2.from_config(TinyBackbone(), tiny_cfg(queue_size=100), num_train=10)
    assert m.queue.shape == (100, 4) and m.queue_idx.shape == (100,)
    assert torch.allclose(m.queue.norm(dim=1), torch.ones(100))  # initial keys are unit vectors
    assert torch.all(m.queue_idx == -1)  # no image
    assert "queue_idx" in m.state_dict()  # checkpointed with the queue: resume stays exact


def test_a_queue_that_the_run_never_fills_is_reported_once_with_its_share(caplog):
    """The default's 65,536-row queue receives 17,920 keys: the log says how much of it stays random."""
    cfg = tiny_cfg(queue_size=100).model_copy(update={"batch_size": 4, "epochs": 3})
    with caplog.at_level(logging.INFO, logger="finesyn.methods.mocov2"):
        MoCoV2.from_config(TinyBackbone(), cfg, num_train=10)  # 2 batches x 4 keys x 3 epochs = 24 keys
        MoCoV2.from_config(TinyBackbone(), cfg.model_copy(update={"epochs": 13}), num_train=10)  # 104 keys: fills
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith(
        "mocov2 queue: 100 rows, this run enqueues 24 keys: 76 % of the rows stay the random unit vectors "
        "they start as, negatives of every query for the whole run. Expected on a small dataset"
    )
    assert messages[0].endswith("set pretrain.methods.mocov2.queue_size <= 24")  # says why and what to do


def masked_reference_loss(m: MoCoV2, x1, x2, own: torch.Tensor) -> torch.Tensor:
    """InfoNCE per query over the queue rows that hold no key of the query's own image."""
    with torch.no_grad():
        q = F.normalize(m.projector(m.backbone(x1)), dim=1)
        k = m._keys(x2)
    losses = []
    for i in range(len(q)):
        negatives = m.queue[m.queue_idx != own[i]]
        logits = torch.cat([(q[i] * k[i]).sum().view(1), negatives @ q[i]]) / m.temperature
        losses.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(losses).mean()


def test_a_querys_own_image_is_never_among_its_negatives():
    """A queue larger than the dataset: several stale keys of each queried image; none is a negative."""
    m = tiny_moco(queue_size=12)
    g = torch.Generator().manual_seed(0)
    for step in range(5):  # 6 images, batch 4: the queue wraps and holds up to 3 keys per image
        own = torch.randperm(6, generator=g)[:4]
        x1, x2 = images(4, 10 + step), images(4, 20 + step)
        m.set_indices(own)
        loss = m.ssl_loss(x1, x2).loss
        held = set(m.queue_idx.tolist()) & set(own.tolist())
        assert step == 0 or held  # the check below has own keys to mask
        torch.testing.assert_close(loss.detach(), masked_reference_loss(m, x1, x2, own), rtol=1e-5, atol=1e-6)
        m.after_step(0.0)
        assert torch.equal(m.queue_idx[(4 * step + torch.arange(4)) % 12], own)  # each key with its image's index
    unmasked = info_nce(*(F.normalize(t, dim=1) for t in (m.projector(m.backbone(x1)), m._keys(x2))), m.queue, m.temperature)
    m.set_indices(own)
    assert not torch.isclose(m.ssl_loss(x1, x2, update_state=False).loss, unmasked)


def test_a_shorter_batch_is_the_first_images_of_the_indexed_one():
    """The module's L_Cp pairs are decoded from the first n images: their sources are masked."""
    m = tiny_moco(queue_size=8)
    m.set_indices(torch.tensor([3, 1, 4, 0]))
    m.ssl_loss(images(4, 1), images(4, 2))
    m.after_step(0.0)
    own = torch.tensor([1, 4, 5, 2])
    m.set_indices(own)
    x1, x2 = images(2, 3), images(2, 4)
    loss = m.ssl_loss(x1, x2, update_state=False).loss
    torch.testing.assert_close(loss.detach(), masked_reference_loss(m, x1, x2, own[:2]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="indices"):
        m.ssl_loss(images(5, 3), images(5, 4))


# ----------------------------------------------------------------------------- momentum encoder
def test_momentum_update_is_an_exact_ema_and_buffers_follow_the_online_network():
    m = tiny_moco(momentum=0.9)
    with torch.no_grad():  # make online and key differ
        for p in list(m.backbone.parameters()) + list(m.projector.parameters()):
            p.add_(torch.randn_like(p))
    m.ssl_loss(images(4, 1), images(4, 2))  # updates online BN running stats
    online = [p.detach().clone().double() for p in list(m.backbone.parameters()) + list(m.projector.parameters())]
    key = [p.detach().clone().double() for p in list(m.key_backbone.parameters()) + list(m.key_projector.parameters())]
    assert any(not torch.equal(a, b) for a, b in zip(online, key))
    m.after_step(0.5)
    new_key = list(m.key_backbone.parameters()) + list(m.key_projector.parameters())
    for p_k, k_old, p_o in zip(new_key, key, online):
        expected = 0.9 * k_old + 0.1 * p_o
        torch.testing.assert_close(p_k.detach().double(), expected, rtol=0, atol=1e-6)
    for b_o, b_k in zip(m.backbone.buffers(), m.key_backbone.buffers()):
        assert torch.equal(b_o, b_k)


def test_key_encoder_gets_no_gradient():
    m = tiny_moco()
    out = m.ssl_loss(images(4, 1), images(4, 2))
    out.loss.backward()
    for p in list(m.key_backbone.parameters()) + list(m.key_projector.parameters()):
        assert not p.requires_grad and p.grad is None
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert out.h1.shape == (4, 8) and out.h1.requires_grad


def test_mocov2_with_the_real_small_resnet18():
    torch.manual_seed(0)
    m = build_method("mocov2", Backbone("resnet18", "small"), tiny_cfg(queue_size=8), num_train=100)
    out = m.ssl_loss(images(2, 1, size=16), images(2, 2, size=16))
    assert out.h1.shape == (2, 512) and torch.isfinite(out.loss)
    out.loss.backward()
    assert m.backbone.net.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.key_backbone.parameters())


# ----------------------------------------------------------------------------- SimSiam
def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (a.pow(2).sum(1).sqrt() * b.pow(2).sum(1).sqrt())


def test_negative_cosine_hand_computed():
    p = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[1.0, 1.0], [4.0, 3.0]])
    expected = -(1 / math.sqrt(2) + 24 / 25) / 2
    assert negative_cosine(p, z).item() == pytest.approx(expected, rel=1e-6)


def test_simsiam_loss_is_the_symmetric_negative_cosine():
    torch.manual_seed(0)
    m = SimSiam(TinyBackbone(), proj_dim=8, pred_hidden_dim=4)
    x1, x2 = images(4, 1), images(4, 2)
    loss = m.ssl_loss(x1, x2).loss
    with torch.no_grad():  # train-mode BN: the same batch gives the same outputs
        z1, z2 = m.projector(m.backbone(x1)), m.projector(m.backbone(x2))
        p1, p2 = m.predictor(z1), m.predictor(z2)
    expected = -(_cos(p1, z2).mean() + _cos(p2, z1).mean()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_negative_cosine_stops_the_gradient_into_z():
    p = torch.tensor([[1.0, 2.0], [0.5, -1.0]], requires_grad=True)
    z = torch.tensor([[2.0, 1.0], [1.0, 1.0]], requires_grad=True)
    negative_cosine(p, z).backward()
    assert z.grad is None or torch.all(z.grad == 0)
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_simsiam_projection_gets_gradient_only_through_its_predictor():
    """d loss / d z2 must equal the gradient through p2 = predictor(z2) alone: the target branch
    D(p1, z2) contributes nothing (stop-gradient)."""
    torch.manual_seed(0)
    m = SimSiam(TinyBackbone(), proj_dim=8, pred_hidden_dim=4)
    x1, x2 = images(4, 1), images(4, 2)
    zs: list[torch.Tensor] = []

    def keep(mod, inp, out):
        out.retain_grad()
        zs.append(out)

    handle = m.projector.register_forward_hook(keep)
    m.ssl_loss(x1, x2).loss.backward()
    handle.remove()
    z1, z2 = zs
    zz2 = z2.detach().clone().requires_grad_(True)
    only_predictor = 0.5 * -F.cosine_similarity(m.predictor(zz2), z1.detach(), dim=1).mean()
    (expected,) = torch.autograd.grad(only_predictor, zz2)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(z2.grad, expected, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- registry
def test_registry_builds_every_registered_method():
    assert {"mocov2", "simsiam"} <= set(METHODS)
    for name, cls in METHODS.items():
        torch.manual_seed(0)
        m = build_method(name, TinyBackbone(), tiny_cfg(), num_train=100, num_classes=3)
        assert type(m) is cls and isinstance(m, SSLMethod) and m.name == name
        assert cls.loss_kind  # the report names each curve panel by it
        if m.uses_labels:
            m.set_targets(torch.tensor([0, 1, 2, 0]))
        out = m.ssl_loss(images(4, 1), images(4, 2), update_state=False)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert out.h1.shape == (4, 8) and out.h1.requires_grad
        assert m.projector(out.h1).shape[0] == 4  # what extract's `feature: projector` reads (encoder.pt)


def test_unknown_method_name_is_an_error():
    with pytest.raises(ValueError, match="unknown SSL method"):
        build_method("mocov3", TinyBackbone(), tiny_cfg(), num_train=100)


def test_duplicate_registration_raises_and_keeps_the_original():
    original = METHODS["mocov2"]

    class Impostor(SSLMethod):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        register("mocov2")(Impostor)
    assert METHODS["mocov2"] is original and original.name == "mocov2"


# ----------------------------------------------------------------------------- supervised reference
def test_supervised_loss_is_the_mean_cross_entropy_of_both_views():
    torch.manual_seed(0)
    m = Supervised(TinyBackbone(), num_classes=3)
    x1, x2, y = images(4, 1), images(4, 2), torch.tensor([2, 0, 1, 2])
    m.set_targets(y)
    out = m.ssl_loss(x1, x2)
    expected = 0.0
    for x in (x1, x2):  # -log softmax(logits)[y], written out
        logits = m.projector(m.backbone(x))
        expected += 0.5 * (logits.exp().sum(1).log() - logits[torch.arange(4), y]).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.h1, m.backbone(x1))


def test_supervised_with_one_view_never_reads_the_second():
    torch.manual_seed(0)
    m = Supervised(TinyBackbone(), num_classes=3, views=1)
    x1, y = images(4, 1), torch.tensor([2, 0, 1, 2])
    m.set_targets(y)
    out = m.ssl_loss(x1, torch.full_like(x1, float("nan")))  # a NaN second view would poison the loss if read
    logits = m.projector(m.backbone(x1))
    torch.testing.assert_close(out.loss, (logits.exp().sum(1).log() - logits[torch.arange(4), y]).mean())
    with pytest.raises(ValueError, match="views"):
        Supervised(TinyBackbone(), num_classes=3, views=3)


def test_supervised_refuses_a_batch_without_its_labels():
    m = Supervised(TinyBackbone(), num_classes=3)
    with pytest.raises(RuntimeError, match="set_targets"):
        m.ssl_loss(images(4, 1), images(4, 2))
    m.set_targets(torch.tensor([0, 1]))  # a previous batch's labels: wrong length
    with pytest.raises(RuntimeError, match="set_targets"):
        m.ssl_loss(images(4, 1), images(4, 2))


def test_supervised_needs_the_number_of_classes():
    with pytest.raises(ValueError, match="num_classes"):
        build_method("supervised", TinyBackbone(), tiny_cfg(), num_train=100)


# ----------------------------------------------------------------------------- SimSiam's fixed predictor lr
@pytest.mark.parametrize("fix", [True, False])
def test_simsiam_predictor_keeps_the_base_lr_when_fixed(fix):
    """Issue 16 fix 5: with fix_pred_lr the predictor's group stays at pretrain.lr through the cosine
    decay (main_simsiam.py's --fix-pred-lr); without it, one scheduled group as for every method."""
    from finesyn.train import make_optimizer, param_groups, set_lr

    cfg = PretrainConfig(lr=0.05, schedule="cosine", methods={"simsiam": {"proj_dim": 8, "pred_hidden_dim": 4, "fix_pred_lr": fix}})
    m = build_method("simsiam", TinyBackbone(), cfg, num_train=100)
    opt = make_optimizer(cfg, param_groups(m, None))
    set_lr(opt, cfg, step=90, total=100, steps_per_epoch=10)  # near the end: the schedule is at ~2 % of lr
    scheduled = opt.param_groups[0]
    assert scheduled["lr"] < 0.01 * 2.5
    covered = {id(p) for g in opt.param_groups for p in g["params"]}
    assert covered == {id(p) for p in m.parameters() if p.requires_grad}  # every parameter trained, once
    if fix:
        fixed = opt.param_groups[1]
        assert fixed["lr"] == 0.05 and {id(p) for p in fixed["params"]} == {id(p) for p in m.predictor.parameters()}
    else:
        assert len(opt.param_groups) == 1


def test_only_simsiam_has_a_fixed_lr_group():
    for name in ("mocov2", "supervised"):
        m = build_method(name, TinyBackbone(), tiny_cfg(), num_train=100, num_classes=3)
        assert m.fixed_lr_parameters() == []

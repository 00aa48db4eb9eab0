"""The synthesized-pair module: which dimensions are selected, how they are perturbed, where
gradients flow, and that L_R and L_Cp are what the notes say they are."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinyBackbone
from torch import nn

from finesyn.config import SynthConfig
from finesyn.methods.mocov2 import MoCoV2
from finesyn.methods.simsiam import SimSiam
from finesyn.models.decoder import Decoder
from finesyn.pairs import SynthPairs, criteria
from finesyn.pairs.perturb import perturb

D, SIZE = 8, 16  # feature dim and image size of the tiny setup


pytestmark = pytest.mark.usefixtures("one_thread")


def make_method(name: str):
    torch.manual_seed(0)
    if name == "mocov2":
        return MoCoV2(TinyBackbone(), proj_hidden_dim=16, proj_dim=4, queue_size=8, momentum=0.9, temperature=0.2)
    return SimSiam(TinyBackbone(), proj_dim=8, pred_hidden_dim=4)


def make_synth(**kw) -> SynthPairs:
    torch.manual_seed(1)
    return SynthPairs(D, SIZE, SynthConfig(decoder_width=16, **kw))


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def idx(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask).flatten().tolist())


def module_params_grad_zero(module: nn.Module) -> bool:
    return all(p.grad is None or torch.all(p.grad == 0) for p in module.parameters())


def module_params_grad_nonzero(module: nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# ----------------------------------------------------------------------------- criteria
def features_with(means, scales) -> torch.Tensor:
    """(2, d) features whose column j has mean means[j] and unbiased variance 2·scales[j]²."""
    m, s = torch.tensor(means, dtype=torch.float32), torch.tensor(scales, dtype=torch.float32)
    v = torch.tensor([[-1.0], [1.0]])
    return m + v * s


def test_lowest_selects_round_fraction_d_and_breaks_ties_by_lower_index():
    scores = torch.tensor([3.0, 1.0, 1.0, 0.0, 1.0, 5.0])
    assert idx(criteria.lowest(scores, 1 / 6)) == {3}
    assert idx(criteria.lowest(scores, 2 / 6)) == {3, 1}  # tie 1, 2, 4 -> the lower index
    assert idx(criteria.lowest(scores, 3 / 6)) == {3, 1, 2}
    assert idx(criteria.lowest(scores, 0.0)) == set()
    assert idx(criteria.lowest(scores, 1.0)) == set(range(6))
    assert int(criteria.lowest(torch.zeros(8), 0.3).sum()) == 2  # round(2.4)
    assert idx(criteria.lowest(torch.zeros(8), 0.3)) == {0, 1}
    assert int(criteria.lowest(torch.zeros(8), 0.45).sum()) == 4  # round(3.6), not floor


def test_variance_criterion_selects_the_lowest_variance_dimensions():
    scales = [5.0, 1.0, 7.0, 0.5, 3.0, 2.0, 8.0, 4.0]
    h = features_with([0.0] * 8, scales)
    synth = make_synth(criteria=("variance",), k_var=0.25)
    mean, var = synth._stats(h)
    torch.testing.assert_close(var, torch.var(h, dim=0, unbiased=True))
    torch.testing.assert_close(mean, h.mean(0))
    mask = synth.select(h, torch.zeros(()), var, gen())
    assert idx(mask) == {3, 1}
    synth = make_synth(criteria=("variance",), k_var=0.5)
    assert idx(synth.select(h, torch.zeros(()), var, gen())) == {3, 1, 5, 4}


def test_ema_variance_statistic():
    synth = make_synth(criteria=("variance",), variance_stat="ema", ema_momentum=0.75)
    h1 = features_with([0.0] * 8, [1.0] * 8)  # var 2
    h2 = features_with([4.0] * 8, [3.0] * 8)  # var 18, mean 4
    _, v1 = synth._stats(h1)
    m2, v2 = synth._stats(h2)
    torch.testing.assert_close(v1, torch.full((8,), 2.0))
    torch.testing.assert_close(v2, torch.full((8,), 0.75 * 2 + 0.25 * 18))
    torch.testing.assert_close(m2, torch.full((8,), 0.25 * 4.0))


def gradcam_setup():
    """h (2, 6), loss = sum(h·W) so ∂L/∂h = W; s_j = mean_i(h_ij · -W_ij).

    Column 0 has h = [2, 0], -W = [1, 0]: s_0 = (2·1 + 0·0)/2 = 1 (mean(-W)·mean(h) would be 0.5);
    the other columns have equal rows: s = [1, 2·-1, 1·0.5, 3·2, 1·-2, 0.5·4] = [1, -2, 0.5, 6, -2, 2].
    """
    h = torch.tensor([[2.0, 2.0, 1.0, 3.0, 1.0, 0.5], [0.0, 2.0, 1.0, 3.0, 1.0, 0.5]], requires_grad=True)
    neg_w = torch.tensor([[1.0, -1.0, 0.5, 2.0, -2.0, 4.0], [0.0, -1.0, 0.5, 2.0, -2.0, 4.0]])
    return h, (h * -neg_w).sum(), torch.tensor([1.0, -2.0, 0.5, 6.0, -2.0, 2.0])


def test_gradcam_importance_formula():
    h, loss, expected = gradcam_setup()
    (grad,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(criteria.gradcam_importance(h.detach(), grad), expected)


def test_gradcam_importance_is_informative_behind_a_batchnorm_projector():
    """Linear→BN makes the batch-summed input gradient 0; the per-sample product must not vanish."""
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    h = torch.rand(32, 8, requires_grad=True)
    loss = head(h).pow(2).mean()
    (grad,) = torch.autograd.grad(loss, h)
    degenerate = (-grad).mean(0) * h.detach().mean(0)  # batch-mean weight × mean activation: float noise
    informative = criteria.gradcam_importance(h.detach(), grad)
    assert informative.abs().min() > 1e-6
    assert informative.abs().max() > 1000 * degenerate.abs().max()


@pytest.mark.parametrize(
    "rank, k, expected",
    [  # s = [1, -2, 0.5, 6, -2, 2]; |s| = [1, 2, 0.5, 6, 2, 2] (ties: lower index first)
        ("signed", 1 / 6, {1}),
        ("signed", 2 / 6, {1, 4}),
        ("signed", 3 / 6, {1, 4, 2}),
        ("signed", 4 / 6, {1, 4, 2, 0}),
        ("abs", 1 / 6, {2}),
        ("abs", 2 / 6, {2, 0}),
        ("abs", 3 / 6, {2, 0, 1}),
        ("abs", 4 / 6, {2, 0, 1, 4}),
    ],
)
def test_gradcam_criterion_selects_the_least_important(rank, k, expected):
    h, loss, _ = gradcam_setup()
    synth = SynthPairs(6, SIZE, SynthConfig(decoder_width=16, criteria=("gradcam",), k_cam=k, gradcam_rank=rank))
    assert idx(synth.select(h, loss, torch.ones(6), gen())) == expected


def test_gradcam_default_ranks_importance_by_magnitude():
    """Issue 16 fix 4: by default "least important" is the smallest |s_j|, not the most negative s_j."""
    h, loss, _ = gradcam_setup()
    synth = SynthPairs(6, SIZE, SynthConfig(decoder_width=16, criteria=("gradcam",), k_cam=2 / 6))
    assert synth.cfg.gradcam_rank == "abs"
    assert idx(synth.select(h, loss, torch.ones(6), gen())) == {2, 0}  # signed would take {1, 4} (s = -2, -2)


def test_union_and_intersection():
    h, loss, _ = gradcam_setup()  # gradcam, 3 lowest: {1, 4, 2}
    var = torch.tensor([0.1, 5.0, 0.2, 3.0, 4.0, 6.0])  # lowest 2 = {0, 2}
    cfg = dict(decoder_width=16, criteria=("variance", "gradcam"), k_var=2 / 6, k_cam=3 / 6, gradcam_rank="signed")
    union = SynthPairs(6, SIZE, SynthConfig(combine="union", **cfg))
    inter = SynthPairs(6, SIZE, SynthConfig(combine="intersection", **cfg))
    assert idx(union.select(h, loss, var, gen())) == {0, 1, 2, 4}
    assert idx(inter.select(h, loss, var, gen())) == {2}


def test_random_criterion_count_and_determinism():
    synth = make_synth(criteria=("random",), k_random=0.25)
    h = torch.randn(4, D)
    m1 = synth.select(h, torch.zeros(()), torch.ones(D), gen(5))
    m2 = synth.select(h, torch.zeros(()), torch.ones(D), gen(5))
    assert int(m1.sum()) == 2 and torch.equal(m1, m2)
    masks = {tuple(synth.select(h, torch.zeros(()), torch.ones(D), gen(s)).tolist()) for s in range(20)}
    assert len(masks) > 1 and all(sum(m) == 2 for m in masks)


# ----------------------------------------------------------------------------- perturbation
MASK = torch.tensor([False, True, False, True, True, False, False, False, False, True])


@pytest.mark.parametrize("kind", ["gaussian_add", "gaussian_replace", "swap"])
def test_perturb_changes_exactly_the_selected_dims(kind):
    h = torch.randn(6, 10, generator=gen(1))
    mean, std = h.mean(0), h.std(0)
    out = perturb(h, MASK, kind, 0.5, mean, std, gen(2))
    assert out.shape == h.shape and out.dtype == h.dtype
    assert torch.equal(out[:, ~MASK], h[:, ~MASK])
    assert torch.all(out[:, MASK] != h[:, MASK])


def test_perturb_with_an_empty_mask_is_the_identity():
    h = torch.randn(6, 10, generator=gen(1))
    for kind in ("gaussian_add", "gaussian_replace", "swap"):
        assert torch.equal(perturb(h, torch.zeros(10, dtype=torch.bool), kind, 1.0, h.mean(0), h.std(0), gen(2)), h)


def test_gaussian_add_noise_scale_is_beta_sigma():
    n, beta = 40000, 0.7
    std = torch.tensor([0.5, 1.0, 2.0, 3.0])
    h = torch.randn(n, 4, generator=gen(1)) * 10
    noise = perturb(h, torch.ones(4, dtype=torch.bool), "gaussian_add", beta, torch.zeros(4), std, gen(2)) - h
    torch.testing.assert_close(noise.std(0), beta * std, rtol=0.03, atol=0)
    torch.testing.assert_close(noise.mean(0), torch.zeros(4), rtol=0, atol=0.05)


def test_gaussian_replace_is_noise_around_the_mean():
    n, beta = 40000, 0.7
    std, mean = torch.tensor([0.5, 1.0, 2.0, 3.0]), torch.tensor([-1.0, 0.0, 2.0, 5.0])
    h = torch.full((n, 4), 100.0)
    out = perturb(h, torch.ones(4, dtype=torch.bool), "gaussian_replace", beta, mean, std, gen(2))
    torch.testing.assert_close(out.std(0), beta * std, rtol=0.03, atol=0)
    torch.testing.assert_close(out.mean(0), mean, rtol=0, atol=0.05)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_swap_takes_another_samples_value_never_its_own(n):
    h = torch.arange(n, dtype=torch.float32).view(n, 1).expand(n, 3).contiguous() + torch.tensor([0.0, 100.0, 200.0])
    mask = torch.tensor([True, False, True])
    for seed in range(25):
        out = perturb(h, mask, "swap", 1.0, h.mean(0), h.std(0), gen(seed))
        src = out[:, 0].long()  # which row each row's selected values come from
        assert torch.all(src != torch.arange(n)), f"seed {seed}: a row was mapped to itself"
        assert sorted(src.tolist()) == list(range(n))  # a permutation
        assert torch.equal(out[:, 2] - 200, out[:, 0])  # the same source row for every selected dim
        assert torch.equal(out[:, 1], h[:, 1])


# ----------------------------------------------------------------------------- the module: gradients
def run(method_name: str, batch: int = 4, **cfg):
    method = make_method(method_name)
    synth = make_synth(**cfg)
    x1, x2 = images(batch, 1), images(batch, 2)
    out = method.ssl_loss(x1, x2)
    s = synth(method, out, x1, gen(3))
    return method, synth, out, x1, s


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
def test_pair_loss_does_not_train_the_decoder_by_default(method_name):
    method, synth, out, _, s = run(method_name)
    assert s.n_selected > 0
    s.pair.backward()
    assert module_params_grad_zero(synth.decoder)
    assert module_params_grad_nonzero(method.backbone)


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
def test_pair_loss_trains_the_decoder_when_asked(method_name):
    method, synth, _, _, s = run(method_name, decoder_grad_from_pairs=True)
    s.pair.backward()
    assert module_params_grad_nonzero(synth.decoder)
    assert module_params_grad_nonzero(method.backbone)


def grads_reaching(t: torch.Tensor) -> list[torch.Tensor]:
    """Gradients that later backward passes send into `t` (a hook; .grad is unreliable here because
    the Grad-CAM autograd.grad call also fills .grad of tensors that retain_grad())."""
    got: list[torch.Tensor] = []
    t.register_hook(lambda g: got.append(g))
    return got


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
def test_undetached_h_gets_the_pair_gradient_but_the_decoder_does_not(method_name):
    method = make_method(method_name)
    synth = make_synth(detach_h=False)
    x1, x2 = images(4, 1), images(4, 2)
    out = method.ssl_loss(x1, x2)
    s = synth(method, out, x1, gen(3))
    assert all(p.requires_grad for p in synth.decoder.parameters())  # restored after the pair
    got = grads_reaching(out.h1)
    s.pair.backward()
    assert module_params_grad_zero(synth.decoder)
    assert len(got) == 1 and got[0].abs().sum() > 0


@pytest.mark.parametrize("cfg", [dict(), dict(decoder_grad_from_pairs=True)])
def test_detached_h_gets_no_pair_gradient(cfg):
    method = make_method("mocov2")
    synth = make_synth(**cfg)
    x1 = images(4, 1)
    out = method.ssl_loss(x1, images(4, 2))
    s = synth(method, out, x1, gen(3))
    got = grads_reaching(out.h1)
    s.pair.backward()
    assert got == []
    assert module_params_grad_nonzero(method.backbone)  # the encoder still learns from the pair's images


def test_recon_loss_trains_decoder_and_encoder():
    method, synth, _, _, s = run("mocov2")
    s.recon.backward()
    assert module_params_grad_nonzero(synth.decoder) and module_params_grad_nonzero(method.backbone)
    method, synth, _, _, s = run("mocov2", recon_grad_to_encoder=False)
    s.recon.backward()
    assert module_params_grad_nonzero(synth.decoder) and module_params_grad_zero(method.backbone)


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
def test_gradcam_selection_does_not_backpropagate_into_the_backbone(method_name):
    method = make_method(method_name)
    synth = make_synth(criteria=("gradcam",))
    calls = []

    def watch(mod, inp, out):  # a gradient hook on the backbone's first activation
        out.register_hook(lambda g: calls.append(1))

    handle = method.backbone.net[0].register_forward_hook(watch)
    x1 = images(4, 1)
    out = method.ssl_loss(x1, images(4, 2))
    handle.remove()
    mask = synth.select(out.h1, out.loss, torch.ones(D), gen())
    assert int(mask.sum()) == 2
    assert calls == []
    assert all(p.grad is None for p in method.parameters())
    synth(method, out, x1, gen(3))  # the whole module's forward backpropagates nothing either
    assert calls == [] and all(p.grad is None for p in method.parameters())
    out.loss.backward()  # the graph of L_C is still intact, and the hook does fire on a real backward
    assert len(calls) > 0


# ----------------------------------------------------------------------------- the module: values
PAIR_CONFIGS = [
    dict(),
    dict(decoder_grad_from_pairs=True),
    dict(detach_h=False),
    dict(pair_fraction=0.5),
    dict(pair_fraction=0.5, decoder_grad_from_pairs=True),
    dict(pair_fraction=0.5, detach_h=False, perturbation="swap"),
]


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
@pytest.mark.parametrize("cfg", PAIR_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_pair_is_g_h_and_g_h_tilde_and_l_cp_is_the_methods_loss(method_name, cfg):
    method, synth, out, x1, s = run(method_name, batch=6, **cfg)
    n = 6 if cfg.get("pair_fraction", 1.0) == 1.0 else 3
    x_orig, x_a, x_b = s.images
    assert x_orig.shape == x_a.shape == x_b.shape == (n, 3, SIZE, SIZE)
    assert torch.equal(x_orig, x1[:n])
    # the pair: g(h) and g(h̃), h̃ differing from h only in the returned mask's dimensions
    h = out.h1.detach()
    mean, var = h.mean(0), h.var(0)
    synth_cfg = synth.cfg
    h_tilde = perturb(h[:n], s.mask, synth_cfg.perturbation, synth_cfg.beta, mean, var.sqrt(), gen(3))
    with torch.no_grad():  # train-mode BN: a batch's output depends only on the batch
        torch.testing.assert_close(x_a, synth.decoder(h[:n]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x_b, synth.decoder(h_tilde), rtol=1e-5, atol=1e-6)
    assert int(s.mask.sum()) == s.n_selected > 0
    # L_Cp is the method's own loss on the returned pair, without touching the method's state
    state = copy.deepcopy(method.state_dict())
    again = method.ssl_loss(x_a, x_b, update_state=False).loss
    torch.testing.assert_close(s.pair.detach(), again.detach(), rtol=1e-6, atol=1e-7)
    if method_name == "mocov2":
        assert torch.equal(method.queue, state["queue"]) and torch.equal(method.queue_ptr, state["queue_ptr"])


def test_generated_negatives_are_the_other_decoded_images_not_the_queue():
    """synth.pair_negatives: generated -- InfoNCE within the pair batch (MoCo v3's form), the queue untouched."""
    method, synth, out, x1, s = run("mocov2", batch=6, pair_negatives="generated")
    queue = method.queue.clone()
    _, x_a, x_b = s.images
    q = F.normalize(method.projector(method.backbone(x_a)), dim=1)
    with torch.no_grad():
        k = F.normalize(method.key_projector(method.key_backbone(x_b)), dim=1)
    expected = F.cross_entropy(q @ k.T / method.temperature, torch.arange(6))
    torch.testing.assert_close(s.pair.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(s.pair, method.ssl_loss(x_a, x_b, update_state=False).loss)  # not the queue's negatives
    assert torch.equal(method.queue, queue)


def test_pair_augment_feeds_l_cp_an_augmented_pair_drawn_from_the_module_generator():
    from finesyn.config import AugmentConfig

    method = make_method("mocov2")
    x1 = images(6, 1)
    out = method.ssl_loss(x1, images(6, 2))
    seen, real = [], method.ssl_loss
    method.ssl_loss = lambda a, b, update_state=True: (seen.append((a, b)), real(a, b, update_state))[1]
    results = []
    for augment in (False, True):
        torch.manual_seed(1)
        synth = SynthPairs(D, SIZE, SynthConfig(decoder_width=16, pair_augment=augment), AugmentConfig())
        results.append(synth(method, out, x1, gen(3)))
    (plain_a, plain_b), (aug_a, aug_b) = seen
    assert torch.equal(plain_a, results[0].images[1]) and torch.equal(results[1].images[1], results[0].images[1])  # same g(h)
    assert aug_a.shape == plain_a.shape and not torch.allclose(aug_a, plain_a) and not torch.allclose(aug_b, plain_b)
    assert not torch.allclose(results[1].pair, results[0].pair)


def test_generated_negatives_need_mocov2(repo_root):
    import yaml

    from finesyn.config import ParamsError, parse_params

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["experiments"]["simsiam_synth"]["overrides"] = {"synth": {"pair_negatives": "generated"}}
    with pytest.raises(ParamsError, match=r"experiments\.simsiam_synth: pretrain\.synth\.pair_negatives: generated needs method mocov2"):
        parse_params(raw)


def test_forward_values_do_not_depend_on_gradient_routing():
    """detach_h / decoder_grad_from_pairs choose where gradients go, never what is computed."""
    results = []
    for cfg in (dict(), dict(decoder_grad_from_pairs=True), dict(detach_h=False)):
        _, _, _, _, s = run("simsiam", batch=6, pair_fraction=0.5, **cfg)
        results.append(s)
    for s in results[1:]:
        for a, b in zip(results[0].images, s.images):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[0].pair.detach(), s.pair.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[0].recon.detach(), s.recon.detach())


def test_recon_loss_is_pixel_mse_between_g_h_and_x1():
    _, synth, out, x1, s = run("mocov2")
    with torch.no_grad():
        x_hat = synth.decoder(out.h1)
    expected = ((x_hat - x1) ** 2).sum() / x1.numel()
    torch.testing.assert_close(s.recon.detach(), expected, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("size", [32, 64, 96, 112, 224, 50])
def test_decoder_output_is_the_input_size(size):
    dec = Decoder(D, size, "light", width=16)
    with torch.no_grad():
        assert dec(torch.randn(2, D)).shape == (2, 3, size, size)


def test_deep_decoder_output_size():
    dec = Decoder(D, 112, "deep", width=16)
    with torch.no_grad():
        assert dec(torch.randn(2, D)).shape == (2, 3, 112, 112)
    assert dec.seed == 7


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
def test_without_pairs_only_l_r_is_computed_and_the_encoder_sees_no_decoded_image(method_name):
    """ν = 0 (Fig. 5's α-only runs): the encoder's BN statistics must not see decoded images."""
    method = make_method(method_name)
    synth = make_synth()
    x1, x2 = images(4, 1), images(4, 2)
    out = method.ssl_loss(x1, x2)
    bn_before = {k: v.clone() for k, v in method.backbone.state_dict().items() if "running" in k}
    seen = []
    hook = method.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    try:
        s = synth(method, out, x1, gen(3), pairs=False)
    finally:
        hook.remove()
    assert seen == [] and s.images is None and s.n_selected == 0
    assert all(torch.equal(v, method.backbone.state_dict()[k]) for k, v in bn_before.items())
    with torch.no_grad():
        expected = F.mse_loss(synth.decoder(out.h1), x1)
    torch.testing.assert_close(s.recon.detach(), expected, rtol=1e-5, atol=1e-7)
    # with pairs, the same call passes both decoded images through the encoder
    out = method.ssl_loss(x1, x2)
    hook = method.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    try:
        s = synth(method, out, x1, gen(3))
    finally:
        hook.remove()
    assert len(seen) >= 1 and s.images is not None and s.n_selected > 0


def bn_running_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every BatchNorm buffer (running mean/var, num_batches_tracked) of the module, cloned."""
    return {
        f"{name}.{b}": t.clone()
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b, t in m.named_buffers(recurse=False)
    }


@pytest.mark.parametrize("method_name", ["mocov2", "simsiam"])
def test_pairs_leave_the_methods_bn_running_statistics_as_without_them(method_name):
    """Extraction normalises real images with the running statistics: the decoded pair must not
    move them (encoder, heads, MoCo's key encoder), while the pair's forward still uses batch statistics."""
    x1, x2 = images(6, 1), images(6, 2)
    with_pairs, without = make_method(method_name), make_method(method_name)
    s = make_synth()(with_pairs, with_pairs.ssl_loss(x1, x2), x1, gen(3))
    without.ssl_loss(x1, x2)
    assert s.n_selected > 0
    a, b = bn_running_stats(with_pairs), bn_running_stats(without)
    assert any("key_backbone" in k for k in a) or method_name != "mocov2"
    assert a.keys() == b.keys() and len(a) >= 3
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert all(m.track_running_stats for m in with_pairs.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))  # restored


def test_l_cp_reads_the_queue_as_it_was_before_this_steps_keys():
    """L_C's keys join MoCo's queue when the step ends: L_Cp's queries, decoded from the same
    images, would otherwise meet their own fresh keys as negatives."""
    method, synth = make_method("mocov2"), make_synth()
    x1, x2 = images(4, 1), images(4, 2)
    with torch.no_grad():
        keys = method._keys(x2)  # train-mode BN: the keys L_C computes for this batch
    seen, loss = [], method.ssl_loss

    def watched(a, b, update_state=True):
        if not update_state:
            seen.append(method.queue.clone())
        return loss(a, b, update_state)

    method.ssl_loss = watched
    synth(method, loss(x1, x2), x1, gen(3))
    assert len(seen) == 1
    is_key = torch.isclose(seen[0][:, None], keys[None], atol=1e-6).all(-1)  # (queue row, key)
    assert not is_key.any()
    method.after_step(0.0)
    torch.testing.assert_close(method.queue[:4], keys, atol=1e-6, rtol=0)  # enqueued at the step's end

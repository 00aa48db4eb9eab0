"""Paired runs: a baseline and its +module run of one seed see the same views in the same order at
every step (the module draws from a stream of its own), a resumed module run replays them, and the
module's no-grad pair decodes leave the decoder's running statistics to L_R's real-image h."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_synth import bn_running_stats, gen, images, make_method, make_synth
from train_runner import tiny_images, tiny_spec

import finesyn.train as train_module
from finesyn.data import augment
from finesyn.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


FAST = {"epochs": 2, "backbone": "convnet"}  # 10 steps of batch 8


class _Stop(Exception):
    pass


def recorded_views(monkeypatch, spec, stop_after: int | None = None) -> list[tuple[int, torch.Tensor]]:
    """(step's data order, view) of every ssl_view call the run makes; `stop_after` views, then it dies."""
    seen, real = [], augment.ssl_view

    def watched(batch, cfg, crop, g):
        if stop_after is not None and len(seen) == stop_after:
            raise _Stop
        v = real(batch, cfg, crop, g)
        seen.append((int(batch.float().sum()), v.clone()))
        return v

    monkeypatch.setattr(train_module, "ssl_view", watched)
    try:
        pretrain(tiny_images(), spec)
    except _Stop:
        pass
    return seen


def assert_same_views(a, b) -> None:
    assert len(a) == len(b) > 0
    for i, ((sa, va), (sb, vb)) in enumerate(zip(a, b)):
        assert sa == sb, f"view {i}: another batch"
        assert torch.equal(va, vb), f"view {i} (step {i // 2 + 1}) differs"


@pytest.mark.parametrize(
    "module",
    [{"criteria": ["variance", "gradcam"]}, {"criteria": ["random"]}, {"pair_augment": True, "pair_negatives": "generated"}],
    ids=["variance+gradcam", "random", "augmented-pair+generated-negatives"],
)
def test_baseline_and_module_runs_of_one_seed_see_identical_views(tmp_path, monkeypatch, module):
    """The pair's augmentation draws from the module's generator too, never from the views'."""
    base = recorded_views(monkeypatch, tiny_spec(tmp_path / "base", synth=False, **FAST))
    spec = tiny_spec(tmp_path / "synth", **FAST)
    spec = replace(spec, cfg=spec.cfg.model_copy(update={"synth": spec.cfg.synth.model_copy(update=module)}))
    with_module = recorded_views(monkeypatch, spec)
    assert len(base) == 2 * spec.cfg.total_steps(40)  # the module draws noise (and random dims) at every one of these steps
    assert_same_views(base, with_module)


def test_a_resumed_module_run_replays_the_views_and_the_modules_draws(tmp_path, monkeypatch):
    spec = tiny_spec(tmp_path / "ckpt", **FAST)
    full = recorded_views(monkeypatch, tiny_spec(tmp_path / "full", **FAST))
    first = recorded_views(monkeypatch, spec, stop_after=13)  # dies in step 7 (checkpoint every step: step 6 is on disk)
    rest = recorded_views(monkeypatch, spec)
    assert len(first) == 13 and len(rest) == len(full) - 12
    assert_same_views(first[:12] + rest, full)
    a, b = pretrain(tiny_images(), spec), pretrain(tiny_images(), tiny_spec(tmp_path / "full", **FAST))
    assert all(torch.equal(x, y) for x, y in zip(a.synth.state_dict().values(), b.synth.state_dict().values()))


@pytest.mark.parametrize(
    "cfg",
    [dict(), dict(pair_fraction=1.0), dict(decoder_grad_from_pairs=True), dict(detach_h=False)],
    ids=["default", "whole_batch", "decoder_grad_from_pairs", "undetached"],
)
def test_pair_decodes_leave_the_decoders_running_statistics_to_l_r(cfg):
    """The decoder's running statistics (used by PSNR and figures) are those of g(h) for the real
    batch, as in a run without pairs: decoding h̃ must not move them."""
    x1, x2 = images(6, 1), images(6, 2)
    with_pairs, without = make_synth(**cfg), make_synth(**cfg)
    m1, m2 = make_method("mocov2"), make_method("mocov2")
    s = with_pairs(m1, m1.ssl_loss(x1, x2), x1, gen(3))
    without(m2, m2.ssl_loss(x1, x2), x1, gen(3), pairs=False)
    assert s.n_selected > 0 and s.images is not None
    a, b = bn_running_stats(with_pairs.decoder), bn_running_stats(without.decoder)
    assert len(a) >= 3 and a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not np.allclose(a[next(k for k in a if k.endswith("running_mean"))].numpy(), 0)  # L_R's decode did move them

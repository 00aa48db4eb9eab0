"""The oracle pair (the module study's positive control): the generator re-renders an image with another
image's scene and lighting and nothing else, and an oracle run is paired with its baseline like a module run."""

import numpy as np
import pytest
import torch
from test_pairing import FAST, assert_same_views, recorded_views
from test_synth import bn_running_stats
from train_runner import tiny_images, tiny_spec

import finesyn.data.synthetic as syn
from finesyn.pairs.oracle import OraclePairs
from finesyn.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = syn.GeneratorSettings(image_size=64, num_classes=4, train_per_class=3, test_per_class=0, seed=5, background_bank=0)


@pytest.fixture(scope="module")
def dataset():
    return syn.generate_synthetic(SETTINGS)


def test_re_rendering_with_its_own_scene_is_the_dataset_image(dataset):
    n = len(dataset.images)
    assert np.array_equal(syn.render_with_scene_of("train", range(n), range(n), SETTINGS), dataset.images)


def test_the_twin_keeps_its_bird_and_takes_the_donors_scene_and_light(dataset):
    i, j = np.arange(0, 12), np.roll(np.arange(0, 12), 5)
    twin = syn.render_with_scene_of("train", i, j, SETTINGS).astype(np.float64)
    obj_i, mark_i = syn.object_and_marking_masks("train", i, SETTINGS)
    obj_j, _ = syn.object_and_marking_masks("train", j, SETTINGS)
    background = (obj_i < 1e-3) & (obj_j < 1e-3)  # neither bird covers it
    own, donor = dataset.images[i].astype(np.float64), dataset.images[j].astype(np.float64)
    to_donor = np.abs(twin - donor).mean(-1)[background].mean()
    to_own = np.abs(twin - own).mean(-1)[background].mean()
    # outside the birds the twin is the donor's image but for the sensor noise, the item's own (uniform in
    # ±amp, amp ≤ 0.05: two draws differ by at most ~2/3 · 12.75 levels on average)
    assert to_donor < 9.0 < 25.0 < to_own, (to_donor, to_own)
    assert np.array_equal(syn.object_and_marking_masks("train", i, SETTINGS)[1], mark_i)  # the class's marking stays the item's
    # and it is drawn: the twin differs from a twin of another class only on the marking
    other = syn.render_with_scene_of("train", i + 1, j, SETTINGS)  # same donor, the next item (another class)
    assert not np.array_equal(other, twin.astype(np.uint8))


def oracle(images: np.ndarray, renders: int = 2) -> OraclePairs:
    twins = np.stack([np.flip(images, axis=2)] * renders, axis=1)  # any stand-in re-rendering of each image
    spec = tiny_spec("unused", **FAST)
    return OraclePairs(np.ascontiguousarray(twins), np.arange(len(images)), spec.cfg.augment, 32, 0.5)


def test_an_oracle_run_sees_the_views_of_its_baseline(tmp_path, monkeypatch):
    base = recorded_views(monkeypatch, tiny_spec(tmp_path / "base", synth=False, **FAST))
    spec = tiny_spec(tmp_path / "oracle", **FAST)
    import test_pairing

    real = test_pairing.pretrain
    monkeypatch.setattr(test_pairing, "pretrain", lambda images, spec: real(images, spec, pair_module=oracle(images)))
    assert_same_views(base, recorded_views(monkeypatch, spec))


def test_an_oracle_run_trains_on_l_cp_without_moving_running_statistics(tmp_path):
    images = tiny_images()
    logged: list[dict] = []
    result = pretrain(images, tiny_spec(tmp_path / "o", **FAST), pair_module=oracle(images), on_log=logged.append)
    assert all(np.isfinite(r["L_Cp"]) and r["L_Cp"] > 0 and r["L_R"] == 0 for r in logged)
    method, pairs = result.method, oracle(images)
    method.set_indices(torch.arange(8))
    x = torch.randn(8, 3, 32, 32)
    out = method.ssl_loss(x, x, update_state=False)  # L_C's forward moves them (train mode); L_Cp's must not
    before = bn_running_stats(method)
    pairs(method, out, x, torch.Generator().manual_seed(0))
    after = bn_running_stats(method)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_the_oracle_refuses_a_batch_image_it_has_no_re_rendering_of():
    images = tiny_images()
    pairs = oracle(images)
    pairs.rows = np.full(len(images), -1)
    spec = tiny_spec("unused", **FAST)
    from finesyn.train import build_models

    _, method, _ = build_models(spec, len(images))
    method.set_indices(torch.arange(8))
    x = torch.randn(8, 3, 32, 32)
    with pytest.raises(ValueError, match="no re-rendering"):
        pairs(method, method.ssl_loss(x, x, update_state=False), x, torch.Generator().manual_seed(0))

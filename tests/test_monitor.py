"""The learning monitor: a validation split carved from train, scored by kNN during pretraining."""

import typing

import numpy as np
import pytest
import torch

from finesyn.config import PretrainConfig
from finesyn.eval.monitor import KnnMonitor, bank_subset, carve_validation, knn_device
from finesyn.eval.retrieval import DEVICES
from finesyn.train import pretrain
from tests.train_runner import final_state, tiny_spec, two_colour_images


def test_validation_is_a_stratified_seeded_part_of_train_and_leaves_it():
    labels = np.repeat(np.arange(4), 30)[np.random.default_rng(1).permutation(120)]
    train_idx = np.arange(10, 110)  # the test split (the rest) is never touched
    fit, val = carve_validation(train_idx, labels, 0.2, seed=0)
    assert set(fit) | set(val) == set(train_idx) and not set(fit) & set(val)
    for c in range(4):
        n_c = int((labels[train_idx] == c).sum())
        assert int((labels[val] == c).sum()) == round(0.2 * n_c)
    assert np.array_equal(carve_validation(train_idx, labels, 0.2, seed=0)[1], val)
    assert not np.array_equal(carve_validation(train_idx, labels, 0.2, seed=1)[1], val)


def test_a_class_with_one_train_image_is_kept_for_training_with_a_warning_naming_it():
    """It used to stop pretrain with "class 3 has 1 train image(s)" (an index, no name, no key)."""
    labels = np.array([0] * 10 + [1] * 10 + [2])
    with pytest.warns(UserWarning, match=r"class 'painted_bunting' has 1 train image: it stays in pretraining .*monitor_val_fraction"):
        fit, val = carve_validation(np.arange(21), labels, 0.2, 0, ["a", "b", "painted_bunting"])
    assert 20 in fit and 20 not in val and sorted(labels[val].tolist()) == [0, 0, 1, 1]


def test_bank_takes_per_class_images_of_fit_only_seeded_and_0_keeps_all():
    labels = np.repeat(np.arange(3), [40, 40, 5])
    fit = np.arange(2, 85)  # images 0-1 (class 0) are held out: never in the bank
    bank = bank_subset(fit, labels, 10, seed=0)
    assert set(bank) <= set(fit)
    assert [int((labels[bank] == c).sum()) for c in range(3)] == [10, 10, 5]  # a smaller class gives all it has
    assert np.array_equal(bank_subset(fit, labels, 10, seed=0), bank)
    assert not np.array_equal(bank_subset(fit, labels, 10, seed=1), bank)
    assert np.array_equal(bank_subset(fit, labels, 0, seed=0), fit)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_validation_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ValueError, match="monitor_val_fraction"):
        carve_validation(np.arange(20), np.arange(20) % 2, fraction, 0)


def test_every_pretrain_device_maps_to_a_knn_vote_device():
    """pretrain.device names torch devices ("cuda", "mps"); the vote takes FAISS's ("auto", "cpu", "gpu").
    Passing one for the other failed the first monitor point of every `device: cuda` run."""
    choices = typing.get_args(PretrainConfig.model_fields["device"].annotation)
    assert set(choices) == {"auto", "cpu", "cuda", "mps"}
    assert all(knn_device(c) in DEVICES for c in choices)
    assert knn_device("cpu") == "cpu" and knn_device("mps") == "cpu"  # no FAISS on MPS
    assert knn_device("cuda") == "auto"  # GPU FAISS where installed, the CPU build otherwise (never an error)


def test_monitor_scores_held_out_images_at_0_every_n_and_the_end_and_changes_nothing(tmp_path):
    images, labels = two_colour_images()
    fit, val = carve_validation(np.arange(len(images)), labels, 0.25, 0)
    monitor = KnnMonitor(images, labels, fit, val, 32, k=5, device="cpu")
    spec = tiny_spec(tmp_path / "a", epochs=2, batch_size=8, monitor_every_steps=3, checkpoint_every_steps=100)
    watched = pretrain(images, spec, fit, monitor=monitor)
    assert [r["step"] for r in watched.monitor] == [0, 3, 6, 8]  # 2 epochs of 36 // 8 = 4 steps: every 3rd, and the end
    assert all(r["val/knn5_top1"] > 90 for r in watched.monitor)  # colour classes: separable from the start
    plain = pretrain(images, tiny_spec(tmp_path / "b", epochs=2, batch_size=8, checkpoint_every_steps=100), fit)
    assert plain.monitor == []
    a, b = final_state(watched), final_state(plain)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # monitoring draws nothing, trains nothing

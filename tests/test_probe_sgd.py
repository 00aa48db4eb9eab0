"""The paper-style SGD linear probe: output, frozen-backbone sanity check, lr schedule, test-set selection label."""

import re

import numpy as np
import pytest
import torch

from finesyn.eval.probe_sgd import (
    SELECTION,
    BackboneChangedError,
    changed_keys,
    lr_at,
    sgd_probe,
    snapshot_state,
)
from finesyn.models.backbone import Backbone

N_CLS, S, CROP = 4, 32, 28


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: thread hand-off dominates, and on a busy machine 2 threads are ~40x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data():
    """40 images, 32 px, 4 classes (colour-coded so the probe can learn something), 24 train / 16 test."""
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(N_CLS), 10)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], np.float32)
    img = base[labels][:, None, None, :] + rng.normal(0, 25, (len(labels), S, S, 3))
    images = np.clip(img, 0, 255).astype(np.uint8)
    train = np.arange(24)
    test = np.arange(24, 40)
    return images, train, labels[train], test, labels[test]


def backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone("resnet18")


def run(data, net=None, **kw):
    images, tr, ytr, te, yte = data
    args = dict(num_classes=N_CLS, crop_size=CROP, epochs=3, milestones=(1, 2), batch_size=16, seed=0, device="cpu")
    args.update(kw)
    return sgd_probe(net if net is not None else backbone(), images, tr, ytr, te, yte, **args)


@pytest.fixture(scope="module")
def result(data):
    return run(data)


def test_tiny_run_output(result):
    for key in ("top1", "top5", "per_class_top1", "protocol", "selection", "sanity_check", "history", "epoch"):
        assert key in result
    assert 0 <= result["top1"] <= result["top5"] <= 100
    assert len(result["per_class_top1"]) == N_CLS and all(v is not None for v in result["per_class_top1"])
    assert result["n_train"] == 24 and result["n_test"] == 16
    assert result["selection"] == "final epoch" and result["epoch"] == 3 == len(result["history"])
    assert result["sanity_check"]["passed"] and result["sanity_check"]["tensors_checked"] == len(Backbone("resnet18").state_dict())
    assert all(np.isfinite(h["train_loss"]) for h in result["history"])
    assert "test_top1" not in result["history"][0]  # the test set is scored once, after training
    assert "sgd_paper" in result["protocol"] and "final epoch" in result["protocol"]


def test_deterministic_on_cpu(data, result):
    again = run(data)
    assert again["top1"] == result["top1"] and again["history"] == result["history"]


def test_backbone_stays_frozen(data):
    net = backbone()
    before = snapshot_state(net)
    run(data, net, epochs=1)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert changed_keys(net, before) == []


def test_nudged_weight_fails_loudly(data):
    net = backbone()
    calls = []

    def nudge(module, inputs):  # something modifies a weight mid-training
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                module.net.conv1.weight[0, 0, 0, 0] += 1e-6

    net.register_forward_pre_hook(nudge)
    with pytest.raises(BackboneChangedError, match=r"net\.conv1\.weight") as exc:
        run(data, net, epochs=1)
    assert exc.value.changed == ["net.conv1.weight"]


def test_bn_in_train_mode_fails_loudly(data):
    net = backbone()

    def train_mode(module, inputs):  # BN left in train mode
        module.train()

    net.register_forward_pre_hook(train_mode)
    with pytest.raises(BackboneChangedError, match="running_mean") as exc:
        run(data, net, epochs=1)
    assert "net.bn1.running_var" in exc.value.changed and "net.bn1.num_batches_tracked" in exc.value.changed
    assert "net.conv1.weight" not in exc.value.changed  # parameters untouched: only the buffers moved
    assert "BN running statistics" in str(exc.value)


def test_lr_schedule_at_milestones(result):
    assert lr_at(0, 30.0, (60, 80)) == 30.0
    assert lr_at(59, 30.0, (60, 80)) == 30.0
    assert lr_at(60, 30.0, (60, 80)) == pytest.approx(3.0)
    assert lr_at(79, 30.0, (60, 80)) == pytest.approx(3.0)
    assert lr_at(80, 30.0, (60, 80)) == pytest.approx(0.3)
    assert lr_at(99, 30.0, (60, 80)) == pytest.approx(0.3)
    # the optimiser ran with the scheduled rates (tiny run: milestones at epochs 1 and 2)
    assert [h["lr"] for h in result["history"]] == pytest.approx([30.0, 3.0, 0.3])


def test_best_on_test_is_labelled(data):
    res = run(data, report="best_on_test")
    assert res["selection"] == SELECTION["best_on_test"]
    assert res["selection"] == "best epoch on the TEST set (test-set selection; not a clean estimate)"
    assert "TEST set" in res["protocol"]
    tops = [h["test_top1"] for h in res["history"]]
    assert res["top1"] == max(tops) and res["epoch"] == 1 + tops.index(max(tops))


def test_config_defaults_and_validation():
    from finesyn.config import ProbeConfig

    c = ProbeConfig()
    assert (c.sgd_lr, c.sgd_epochs, c.sgd_milestones, c.sgd_batch_size, c.sgd_momentum, c.sgd_weight_decay, c.sgd_report) == (
        30.0,
        100,
        (60, 80),
        256,
        0.9,
        0.0,
        "final",
    )
    with pytest.raises(ValueError):
        ProbeConfig(sgd_milestones=(80, 60))
    with pytest.raises(ValueError):
        ProbeConfig(sgd_report="best")


def test_progress_reports_each_epoch_out_of_the_total_instead_of_a_log_line(data, caplog):
    calls = []
    with caplog.at_level("INFO", logger="finesyn"):
        run(data, epochs=2, milestones=(1,), progress=lambda e, n, info: calls.append((e, n, info)))
    assert [(e, n) for e, n, _ in calls] == [(0, 2), (1, 2), (2, 2)]
    assert calls[0][2] == "" and re.fullmatch(r"lr 3 loss \d+\.\d{4} train top-1 \d+\.\d\d%", calls[2][2]), calls
    assert not any("probe epoch" in m for m in caplog.messages)
    with caplog.at_level("INFO", logger="finesyn"):
        run(data, epochs=1)
    assert any(m.startswith("probe epoch 1/1 lr 30 loss ") for m in caplog.messages)  # without progress: a line per epoch

"""The module's health (pairs/health.py): its numbers mean what they say, and measuring them changes no run."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_synth import make_method, make_synth
from train_runner import final_state, tiny_spec, two_colour_images

from finesyn.config import AugmentConfig
from finesyn.eval.monitor import KnnMonitor, carve_validation
from finesyn.methods.mocov2 import info_nce_forces
from finesyn.pairs.health import batch_health, pair_health
from finesyn.report.health import reading
from finesyn.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


def health_of(beta: float) -> dict:
    method, synth = make_method("mocov2"), make_synth(beta=beta)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (12, 20, 20, 3), dtype=np.uint8))
    return pair_health(method, synth, images, torch.arange(12), AugmentConfig(), 16, nu=0.5)


def test_an_unperturbed_pair_is_a_duplicate_and_a_larger_perturbation_widens_the_gap():
    same, small, large = health_of(0.0), health_of(1.0), health_of(20.0)
    assert same["pair_pixel_gap"] == pytest.approx(0.0, abs=1e-6) and same["pair_cos"] == pytest.approx(1.0, abs=1e-5)
    assert 0 < small["pair_pixel_gap"] < large["pair_pixel_gap"]
    assert small["views_pixel_gap"] == large["views_pixel_gap"] > 0  # its own generator: the same views each time
    assert small["n_selected"] > 0 and small["grad_ratio_cp_to_c"] > 0
    assert {"L_Cp_pull", "L_Cp_push", "random_dims_pixel_gap", "images_cos"} <= small.keys()


def test_info_nce_forces_hand_computed():
    """One query q = e1, positive k = e1, one negative n = e2, T = 1: p⁺ = e/(e + 1).
    Pull = −(1 − p⁺)·e1: along q, so its tangent part is 0; push = (1 − p⁺)·e2: all tangent."""
    q, k, queue = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    f = info_nce_forces(q, k, queue, 1.0)
    p_neg = 1 / (np.e + 1)
    assert f["pull"] == pytest.approx(0.0, abs=1e-7) and f["push"] == pytest.approx(p_neg, rel=1e-6)
    assert f["pos_cos"] == pytest.approx(1.0) and f["max_neg_cos"] == pytest.approx(0.0)
    f = info_nce_forces(torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]]), queue, 1.0)
    # p⁺ = e^0.6/(e^0.6 + e^0.8); pull's tangent part: (1 − p⁺)·|e1 − 0.6·q| = (1 − p⁺)·0.8
    p_pos = np.exp(0.6) / (np.exp(0.6) + np.exp(0.8))
    assert f["pull"] == pytest.approx((1 - p_pos) * 0.8, rel=1e-6)


def test_health_at_the_monitor_points_changes_nothing_in_the_run(tmp_path):
    images, labels = two_colour_images()
    fit, val = carve_validation(np.arange(len(images)), labels, 0.25, 0)
    monitor = KnnMonitor(images, labels, fit, val, 32, k=5, device="cpu")
    settings = dict(epochs=2, batch_size=8, monitor_every_steps=3, checkpoint_every_steps=100, backbone="convnet")
    module = {"pair_fraction": 0.5, "variance_stat": "ema"}  # state a careless health would move

    def spec_in(d):
        spec = tiny_spec(d, **settings)
        return replace(spec, cfg=spec.cfg.model_copy(update={"synth": spec.cfg.synth.model_copy(update=module)}))

    spec = spec_in(tmp_path / "a")
    watched = pretrain(images, spec, fit, monitor=monitor, health=batch_health(images, val, spec.cfg.augment, 32, spec.cfg.nu))
    plain = pretrain(images, spec_in(tmp_path / "b"), fit, monitor=monitor)
    assert [r["step"] for r in watched.monitor] == [0, 3, 6, 8]
    assert all(0 < r["health/pair_pixel_gap"] and r["health/images"] == len(val) for r in watched.monitor)
    assert all(not any(k.startswith("health/") for k in r) for r in plain.monitor)
    a, b = final_state(watched), final_state(plain)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # measured on copies, with its own generator


def test_the_reading_names_near_duplicates():
    pair = {"pair_pixel_gap": 0.03, "views_pixel_gap": 0.174, "random_dims_pixel_gap": 0.034, "pair_cos": 0.96, "views_cos": 0.82}
    health = {"pair": {**pair, "grad_ratio_cp_to_c": 0.2}, "class": {"decoded_top1": 9.4, "real_top1": 59.8, "chance": 10.0}}
    line = reading(health)
    assert "differs by 17 %" in line and "113 % as much" in line and "near-duplicates" in line


def test_the_report_shows_each_module_runs_health_in_markdown_json_and_html(tmp_path):
    import json

    from finesyn.report import health as report_health

    rec = {"pair": {"pair_pixel_gap": 0.03, "random_dims_pixel_gap": 0.034, "views_pixel_gap": 0.174, "images_pixel_gap": 0.209,
                    "pair_cos": 0.964, "random_dims_cos": 0.96, "views_cos": 0.824, "images_cos": 0.5, "grad_ratio_cp_to_c": 0.25,
                    "L_Cp_pull": 0.145, "L_Cp_push": 0.19},
           "class": {"decoded_top1": 9.4, "real_top1": 59.8, "chance": 10.0}}  # fmt: skip
    model = tmp_path / "synthetic" / "mocov2_synth" / "seed0"
    model.mkdir(parents=True)
    (model / "train.json").write_text(json.dumps({"health": rec}))
    entries = [{"dataset": "synthetic", "experiment": "mocov2_synth", "seed": 0, "health": rec, "source": str(model / "train.json")}]
    md = report_health.to_markdown(entries)
    assert "differs by 17 %" in md and "| synthetic/mocov2_synth seed 0 | 0.030 / 0.034 / 0.174 / 0.209 |" in md
    assert "| 9.4 / 59.8 / 10.0 | – | 0.25 | 0.145 / 0.190 |" in md
    page = "\n".join(report_health.to_html(entries))
    assert "near-duplicates" in page and "<td>0.964 / 0.960 / 0.824 / 0.500</td>" in page
    summary = report_health.add_to_summary({}, entries)
    assert summary["synthetic"]["mocov2_synth"]["module health"]["0"] == rec
    missing = [{**entries[0], "health": None}]
    assert "no health in" in report_health.to_markdown(missing) and "rerun its pretrain stage" in report_health.to_markdown(missing)

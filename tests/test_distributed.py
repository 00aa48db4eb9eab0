"""Distributed pretraining: 2 gloo processes on CPU (torchrun) against one process.

The property (finesyn.distributed's docstring): a W-process run equals one process on the same
global batches when both see the same augmented views. `pretrain(views=...)` makes each view a
function of (sample index, step) only, so both sides see identical views and the comparison
is exact up to float reduction order. Every SSL method, with and without the module (plus
module variants: the 'random' criterion, the 'swap' perturbation, h not detached, EMA statistics),
runs 3 steps of global batch 8 (4 per rank) on 16 px random images with a small BN-CNN stand-in
for the ResNet (the methods only need `backbone.dim` and x -> h). One torchrun job runs all of
it plus the DDP resume, pair_fraction < 1, shuffle-BN and Grad-CAM-gradient checks; a second one
runs the pretrain stage itself.

Tolerances. The comparison runs in float64, both sides entirely (NT-Xent and the module's
statistics compute in float32 only for half-precision inputs), and the single- and 2-process runs
are the same computation in another reduction order, so they must agree to SAME_STEP_REL = 2^-28
relative (tests/tolerances.py: the bound for any step that float32 computes meaningfully, on any
CPU): losses relative to themselves, updates (θ_3 - θ_0) relative to the largest update of the
same tensor, buffers (BN statistics, queue, EMA copies) relative to max(1, the tensor's largest
value): their operands are O(1) activations and unit keys.
The bugs this guards against are orders of magnitude larger (checked by breaking the code on
purpose): per-rank instead of global BN, negatives not gathered, a queue filled with local keys,
unreduced module statistics, per-rank perturbation noise, gradients scaled by 1/W twice (updates
off by 50 %).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import SAME_STEP_REL, float64_default
from torch import nn
from train_runner import nan_loss_at_step

from finesyn import distributed, train
from finesyn.config import AugmentConfig, ParamsError, PretrainConfig
from finesyn.data.augment import ssl_view
from finesyn.distributed import DistContext, SyncBatchNorm, aug_seed, convert_sync_batchnorm, local_batch_size
from finesyn.methods import build_method
from finesyn.methods.mocov2 import MoCoV2
from finesyn.train import NonFiniteLossError, RunSpec, build_models, pretrain

SIZE = 16
N_IMAGES = 24  # 3 steps of the global batch 8
METHOD_CFG = {
    "mocov2": {"proj_hidden_dim": 32, "proj_dim": 16, "queue_size": 12, "momentum": 0.9},  # the queue wraps
    "simsiam": {"proj_dim": 32, "pred_hidden_dim": 16},
    "byol": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32},
    "simclr": {"proj_hidden_dim": 32, "proj_dim": 16},
}
# Grad-CAM importance mean_i(-∂L/∂h_i)·mean_i(h_i) is exactly 0 in exact arithmetic when the projector
# starts with Linear(no bias) -> BN (SimSiam, BYOL, SimCLR): BN's input gradient sums to 0 over the
# batch. Its ranking is then float noise (~1e-18) and no two summation orders agree, so those cases
# use the variance and random criteria; MoCo's projector has no BN and tests Grad-CAM end to end,
# and `test_gradcam_gradient_is_world_size_times_the_global_one` checks the gradient it uses.
NO_CAM = {"criteria": ("variance", "random")}
SYNTH = {"mocov2": {}, "simsiam": NO_CAM, "byol": NO_CAM, "simclr": NO_CAM}
VARIANT = {**NO_CAM, "perturbation": "swap", "detach_h": False, "variance_stat": "ema"}
CASES = {
    **{f"{m}{'+synth' if s else ''}": (m, s, SYNTH[m] if s else {}) for m in METHOD_CFG for s in (False, True)},
    "simclr+synth(swap,grad-to-h,ema)": ("simclr", True, VARIANT),
    "mocov2+synth(swap,grad-to-h)": ("mocov2", True, {"perturbation": "swap", "detach_h": False}),
}
RESUME_STEPS = 4


class TinyBackbone(nn.Module):
    """Stand-in for finesyn.models.backbone.Backbone: conv-BN-ReLU ×2, pooled (BN2d like the ResNet)."""

    dim = 24

    def __init__(self, arch: str = "tiny", stem: str = "standard", pool: str = "avg"):
        super().__init__()
        self.arch, self.stem, self.pool = arch, stem, pool
        self.net = nn.Sequential(
            nn.Conv2d(3, 12, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.Conv2d(12, 24, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(24),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        return self.net(x)


def images(n: int = N_IMAGES) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def views(batch: torch.Tensor, idx: np.ndarray, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's views depend on (its dataset index, step) only: the same on any rank layout."""
    aug = AugmentConfig()
    out = []
    for k in (0, 1):
        rows = [
            ssl_view(batch[j : j + 1], aug, SIZE, torch.Generator().manual_seed(int(i) * 1009 + step * 2 + k)) for j, i in enumerate(idx)
        ]
        out.append(torch.cat(rows).to(torch.get_default_dtype()))
    return out[0], out[1]


def case_spec(name: str, ckpt: Path, **synth_overrides) -> RunSpec:
    method, synth, synth_cfg = CASES[name]
    cfg = PretrainConfig(
        epochs=1,
        batch_size=8,
        lr=0.1,
        device="cpu",
        threads=1,
        amp=False,
        log_every_steps=1,
        checkpoint_every_steps=100,
        methods={method: METHOD_CFG[method]},
        synth={"decoder_width": 16, **synth_cfg, **synth_overrides},
    )
    return RunSpec(method, synth, cfg, SIZE, 0, name, ckpt)  # trained with views=views


def resume_spec(ckpt: Path) -> RunSpec:
    """MoCo v2 + module with *real* per-rank augmentation: the stateful case (queue, EMA, all RNGs)."""
    cfg = PretrainConfig(
        epochs=1,
        batch_size=8,
        lr=0.1,
        device="cpu",
        threads=1,
        amp=False,
        log_every_steps=1,
        checkpoint_every_steps=1,
        keep_checkpoints=3,
        methods={"mocov2": METHOD_CFG["mocov2"]},
        synth={"decoder_width": 16},
    )
    return RunSpec("mocov2", True, cfg, SIZE, 0, "resume", ckpt)


def final_state(result) -> dict[str, torch.Tensor]:
    state = {f"method.{k}": v.detach().clone() for k, v in result.method.state_dict().items()}
    if result.synth is not None:
        state.update({f"synth.{k}": v.detach().clone() for k, v in result.synth.state_dict().items()})
    return state


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the torchrun worker
def worker(out: Path) -> None:
    ctx = distributed.init_from_env("cpu")
    assert ctx.world_size == 2, ctx
    torch.set_num_threads(1)
    train.Backbone = TinyBackbone  # build_models builds the stand-in
    report: dict = {"cases": {}}

    torch.set_default_dtype(torch.float64)
    for name in CASES:
        r = pretrain(images(), case_spec(name, out / "ckpt" / name), dist=ctx, views=views)
        state = final_state(r)
        digests = ctx.all_gather_object(digest(state))
        report["cases"][name] = {"history": r.history, "state": state, "digests": digests}

    # pair_fraction < 1: each rank pairs the first ⌈f·N/W⌉ of its shard (not single-process-equivalent)
    r = pretrain(images(), case_spec("mocov2+synth", out / "ckpt" / "half", pair_fraction=0.5), dist=ctx, views=views)
    report["half_pairs"] = {"digests": ctx.all_gather_object(digest(final_state(r))), "history": r.history, "pairs": len(r.pair_images[0])}

    # resume under DDP: uninterrupted vs. stopped at step 2 (non-finite loss on every rank) and resumed
    torch.set_default_dtype(torch.float32)
    full = pretrain(images(32), resume_spec(out / "full"), dist=ctx)
    try:
        with nan_loss_at_step(2):
            pretrain(images(32), resume_spec(out / "cut"), dist=ctx)
        stopped = False
    except NonFiniteLossError:
        stopped = True
    resumed = pretrain(images(32), resume_spec(out / "cut"), dist=ctx)
    report["resume"] = {
        "stopped": ctx.all_gather_object(stopped),
        "resumed_from": ctx.all_gather_object(resumed.resumed_from),
        "same_as_full": ctx.all_gather_object(digest(final_state(resumed)) == digest(final_state(full))),
        "history_same": ctx.all_gather_object([h["L_C"] for h in resumed.history] == [h["L_C"] for h in full.history]),
        "ranks_same": len(set(ctx.all_gather_object(digest(final_state(full))))) == 1,
    }

    # MoCo with shuffle_bn=True: keys computed on shuffled shards with per-rank BN, then un-shuffled
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    moco = MoCoV2(TinyBackbone(), 32, 16, queue_size=16, momentum=0.9, temperature=0.2, shuffle_bn=True).train()
    moco.distribute(ctx)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(8, 3, SIZE, SIZE, generator=g), torch.randn(8, 3, SIZE, SIZE, generator=g)
    torch.manual_seed(123)  # rank 0's global RNG draws the permutation it broadcasts
    moco.ssl_loss(ctx.local_rows(x1), ctx.local_rows(x2))
    moco.after_step(0.0)  # the step's keys join the queue
    report["shuffle_queues"] = ctx.all_gather_object(moco.queue.clone())

    # the gradient Grad-CAM uses, through SyncBN (SimSiam, BYOL) and the SimCLR gather
    report["gradcam_grad_err"] = {}
    for method in ("simsiam", "byol", "simclr"):
        torch.manual_seed(0)
        m = build_method(method, TinyBackbone(), PretrainConfig(methods=METHOD_CFG), 100).train()
        ref = copy.deepcopy(m)
        g = torch.Generator().manual_seed(2)
        x1, x2 = torch.randn(8, 3, SIZE, SIZE, generator=g), torch.randn(8, 3, SIZE, SIZE, generator=g)
        o = ref.ssl_loss(x1, x2)
        (grad_ref,) = torch.autograd.grad(o.loss, o.h1)
        m.distribute(ctx)
        o = m.ssl_loss(ctx.local_rows(x1), ctx.local_rows(x2))
        (grad,) = torch.autograd.grad(o.loss, o.h1)
        err = ((grad / ctx.world_size - ctx.local_rows(grad_ref)).abs().max() / grad_ref.abs().max()).item()
        report["gradcam_grad_err"][method] = ctx.all_gather_object(err)

    if ctx.is_main:
        torch.save(report, out / "report.pt")
    distributed.shutdown()


# ----------------------------------------------------------------------------- the 2-process run
@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Start torchrun (2 ranks), compute the single-process references meanwhile, then wait."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = {}
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train, "Backbone", TinyBackbone)
            torch.set_num_threads(1)
            torch.set_default_dtype(torch.float64)
            for name in CASES:
                spec = case_spec(name, out / "single" / name)
                _, m0, s0 = build_models(spec, N_IMAGES)
                r = pretrain(images(), spec, views=views)
                initial = {f"method.{k}": v.clone() for k, v in m0.state_dict().items()}
                initial.update({f"synth.{k}": v.clone() for k, v in (s0.state_dict().items() if s0 else [])})
                single[name] = {"history": r.history, "state": final_state(r), "initial": initial}
    except BaseException:
        proc.kill()  # a failing reference must not leave torchrun (and its full stdout pipe) behind
        proc.communicate()
        raise
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{log[-6000:]}"
    report = torch.load(out / "report.pt", weights_only=False)
    report["seconds"] = time.perf_counter() - t0
    print(f"2-process run + references: {report['seconds']:.1f} s")
    return report, single, out


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process(ddp, name):
    report, single, _ = ddp
    got, ref = report["cases"][name], single[name]
    # every rank ends with bit-identical weights, buffers, queue and module statistics
    assert got["digests"][0] == got["digests"][1]
    # losses of the global batch, step by step
    assert len(got["history"]) == len(ref["history"]) == 3
    for g, r in zip(got["history"], ref["history"]):
        for key in ("loss", "L_C", "L_R", "L_Cp"):
            if key in r:
                assert g[key] == pytest.approx(r[key], rel=SAME_STEP_REL, abs=0), (key, g["step"])
        assert g.get("n_selected") == r.get("n_selected")
    # parameter updates and buffers
    state, ref_state, init = got["state"], ref["state"], ref["initial"]
    assert state.keys() == ref_state.keys()
    for k, v in ref_state.items():
        if not v.is_floating_point():
            assert torch.equal(state[k], v), k
            continue
        update = (v - init[k]).abs().max().item()
        err = (state[k] - v).abs().max().item()
        if k.split(".")[-1] in ("running_mean", "running_var", "queue") or "key_" in k or "target_" in k:
            # buffers and EMA copies, relative to their O(1) operands (unit-variance activations, unit keys):
            # a statistic that is 0 exactly (BN after BN) holds only rounding noise of those operands
            assert err <= SAME_STEP_REL * max(1.0, v.abs().max().item()), (k, err)
        else:
            assert update > 0 or err == 0, k
            assert err <= SAME_STEP_REL * update, (k, err, update)


def test_moco_queue_is_identical_on_both_ranks_and_equals_the_single_process_queue(ddp):
    report, single, _ = ddp
    for name in ("mocov2", "mocov2+synth"):
        got, ref = report["cases"][name], single[name]
        assert got["digests"][0] == got["digests"][1]  # includes method.queue and queue_ptr, bitwise
        q, ref_q = got["state"]["method.queue"], ref["state"]["method.queue"]
        assert int(got["state"]["method.queue_ptr"]) == int(ref["state"]["method.queue_ptr"]) == (3 * 8) % 12
        assert (q - ref_q).abs().max() <= SAME_STEP_REL  # unit-norm keys


def test_pair_fraction_below_one_pairs_part_of_each_shard_and_ranks_agree(ddp):
    half = ddp[0]["half_pairs"]
    assert half["digests"][0] == half["digests"][1] and half["pairs"] == 2  # ⌈0.5 · 4⌉ of each rank's 4
    assert all(np.isfinite([h["L_C"], h["L_R"], h["L_Cp"]]).all() for h in half["history"])


def test_resume_under_ddp_is_bit_identical(ddp):
    report, _, out = ddp
    r = report["resume"]
    assert r["stopped"] == [True, True]  # a non-finite loss stops every rank at the same step
    assert r["resumed_from"] == [2, 2]
    assert r["same_as_full"] == [True, True] and r["history_same"] == [True, True] and r["ranks_same"]
    ckpt = torch.load(sorted((out / "cut" / "resume").glob("step_*.pt"))[-1], weights_only=False)  # <ckpt_dir>/<run id>/
    assert ckpt["world_size"] == 2 and len(ckpt["g_aug_ranks"]) == 2
    assert not torch.equal(ckpt["g_aug_ranks"][0], ckpt["g_aug_ranks"][1])  # one augmentation stream per rank


def test_gradcam_gradient_is_world_size_times_the_global_one(ddp):
    """Each rank's ∂L_r/∂h (collectives in the backward carry the other ranks' dependence) is
    W × the single-process gradient of the global-mean loss: what SynthPairs._importance assumes."""
    for method, errs in ddp[0]["gradcam_grad_err"].items():
        assert max(errs) <= SAME_STEP_REL, (method, errs)  # float64 on both sides


def test_shuffle_bn_keys_are_the_unshuffled_per_shard_keys(ddp):
    report, _, _ = ddp
    q0, q1 = report["shuffle_queues"]
    assert torch.equal(q0, q1)
    with float64_default():  # as the worker: the same computation, so the same-step bound applies
        torch.manual_seed(0)
        moco = MoCoV2(TinyBackbone(), 32, 16, queue_size=16, momentum=0.9, temperature=0.2).train()
        g = torch.Generator().manual_seed(1)
        _, x2 = torch.randn(8, 3, SIZE, SIZE, generator=g), torch.randn(8, 3, SIZE, SIZE, generator=g)
        torch.manual_seed(123)
        perm = torch.randperm(8)
        with torch.no_grad():  # each rank's key encoder normalises its own shuffled shard of 4
            shuffled = torch.cat([moco._keys(x2[perm[r * 4 : (r + 1) * 4]]) for r in (0, 1)])
            whole_batch = moco._keys(x2)
    keys = torch.empty_like(shuffled)
    keys[perm] = shuffled
    assert q0.dtype == torch.float64 and (q0[:8] - keys).abs().max() <= SAME_STEP_REL  # unit-norm keys
    assert (q0[:8] - whole_batch).abs().max() > 1e-3  # per-shard BN is not the global BN


def test_pretrain_stage_under_torchrun(tmp_path, repo_root):
    """The CLI path: `torchrun --nproc_per_node 2 stages/pretrain.py`; rank 0 writes outputs and the log."""
    import yaml
    from pipeline_helpers import tiny_params

    raw = tiny_params(yaml.safe_load((repo_root / "params.yaml").read_text()))
    raw["pretrain"]["log_every_steps"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = ["--params", "params.yaml", "--dataset", "synthetic"]
    prep = subprocess.run(
        [sys.executable, str(repo_root / "stages/prepare.py"), *args, "--out", "data"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert prep.returncode == 0, prep.stderr[-3000:]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(repo_root / "stages/pretrain.py"),
        *args,
        "--experiment",
        "mocov2_synth",
        "--data",
        "data",
        "--out",
        "model",
        "--checkpoints",
        "ckpt",
    ]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    record = json.loads((tmp_path / "model/train.json").read_text())
    assert record["processes"] == 2 and record["steps"] >= 1 and (tmp_path / "model/encoder.pt").is_file()
    log = (tmp_path / "ckpt/train.log").read_text()
    assert log.count(f"step {record['steps']}/{record['steps']} (epoch ") == 1  # one writer: rank 0
    curve = (tmp_path / "model/live/plots/metrics/train/L_C.tsv").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in curve[1:]] == list(range(1, record["steps"] + 1))  # live curves: rank 0 only
    assert sorted(p.name for p in (tmp_path / "ckpt" / record["run_id"]).glob("step_*.pt"))  # this run's directory


# ----------------------------------------------------------------------------- single-process units
def test_global_batch_must_split_evenly():
    assert local_batch_size(128, 4) == 32
    with pytest.raises(ParamsError, match=r"pretrain.batch_size \(10\).*divisible.*\(4\)"):
        local_batch_size(10, 4)


def test_augmentation_seeds_differ_per_rank_and_keep_the_single_process_stream():
    assert aug_seed(5, DistContext()) == 6  # what the single-process trainer always used
    seeds = {aug_seed(5, DistContext(rank=r, world_size=4)) for r in range(4)}
    assert len(seeds) == 4 and not seeds & {6, 7}  # disjoint from the module (seed+1) and data (seed+2) streams


def test_sync_batchnorm_without_a_process_group_is_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5), nn.BatchNorm1d(5))
    ref = copy.deepcopy(net)
    params = {id(p) for p in net.parameters()}
    keys = list(net.state_dict())
    convert_sync_batchnorm(net)
    assert isinstance(net[1], SyncBatchNorm) and isinstance(net[4], SyncBatchNorm)
    assert {id(p) for p in net.parameters()} == params and list(net.state_dict()) == keys
    x = torch.randn(6, 3, 8, 8)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(net[1].running_var, ref[1].running_var, rtol=0, atol=0)
    net.eval(), ref.eval()
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_single_process_context_is_the_identity():
    ctx = DistContext()
    t = torch.randn(3, 2)
    assert ctx.all_gather(t) is t and ctx.all_gather_with_grad(t) is t and ctx.all_reduce_sum(t) is t
    assert torch.equal(ctx.local_rows(t), t) and ctx.any(True) and not ctx.any(False)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))

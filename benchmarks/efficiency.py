"""Achieved FLOP/s of the training step over the machine's matrix-multiply peak (issue 9, item 3).

FLOPs: torch.utils.flop_counter.FlopCounterMode over one whole pretraining step (forward,
backward, the module's extra passes; a multiply-add counts 2, as in the peak), counted on an
extra step of each `throughput` run (whose augmentation runs too: its blur convolutions are in
the count, a negligible share) and of the `peer` runs (pre-augmented views: model + loss only).
Achieved FLOP/s = FLOPs per step / median step time of the same run; the peak is the best
`torch.mm` rate measured at the start of the run and again here, the higher of the two.
Profiles (top ops by self CPU time, one step) were written by `throughput` to profile_*.txt.
"""

from __future__ import annotations

from benchmarks.common import Context, target
from benchmarks.machine import matmul_peak

FRACTION_TARGET = 0.5  # training step >= 50% of the matmul peak for ResNet-50 at 112 px (issue 9)


def run(ctx: Context) -> dict:
    start = ctx.shared.get("matmul_peak_start") or {}
    now = matmul_peak(ctx.quick)
    peak = max(start.get("peak_gflops") or 0.0, now["peak_gflops"])
    rows = []
    for r in ctx.shared.get("throughput_runs", []):
        g = r.get("achieved_gflops")
        rows.append(
            {
                "kind": "pretrain step (with augmentation)",
                "setting": r["setting"],
                "method": r["method"],
                "synth": r["synth"],
                "backbone": r["backbone"],
                "crop_size": r["crop_size"],
                "flops_per_step": r["flops_per_step"],
                "step_s": r["step_s"]["median"],
                "achieved_gflops": g,
                "fraction_of_peak": g / peak if g and peak else None,
            }
        )
    for c in ctx.shared.get("peer", []):
        g = c["ours"]["achieved_gflops"]
        rows.append(
            {
                "kind": "model + loss step (pre-augmented views)",
                "setting": c["setting"],
                "method": "mocov2",
                "synth": False,
                "backbone": c["backbone"],
                "crop_size": c["crop_size"],
                "flops_per_step": c["ours"]["flops_per_step"],
                "step_s": c["ours"]["step_s"]["median"],
                "achieved_gflops": g,
                "fraction_of_peak": g / peak if g and peak else None,
            }
        )
    key = next(
        (r for r in rows if r["setting"] == "paper" and r["method"] == "mocov2" and not r["synth"] and r["kind"].startswith("pretrain")),
        None,
    )
    if key is None:
        key = next((r for r in rows if r["setting"] == "paper" and not r["synth"]), None)
    targets = [
        target(
            "efficiency.paper.step_fraction_of_peak",
            f"training step FLOP/s / matmul peak, {key['method'] if key else 'mocov2'} pretrain step at the paper-like setting (ResNet-50, 112 px)",
            key["fraction_of_peak"] if key else None,
            FRACTION_TARGET,
            ">=",
            "fraction",
            setting="paper",
        )
    ]
    profiles = [
        {"file": r["profile_file"], "setting": r["setting"], "method": r["method"], "synth": r["synth"], "top_ops": r["profile_top"]}
        for r in ctx.shared.get("throughput_runs", [])
        if r.get("profile_file")
    ]
    return {
        "peak_gflops": peak,
        "matmul_peak_start": start,
        "matmul_peak_after_training": now,
        "steps": rows,
        "profiles": profiles,
        "targets": targets,
        "flop_convention": "FlopCounterMode: 2 FLOP per multiply-add; matmul peak 2*n^3 per n x n product",
    }

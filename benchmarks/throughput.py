"""Pretraining throughput of every registered method, with and without the module (issue 9, item 1).

Each run is `finesyn.train.pretrain` itself on random uint8 images of the setting's size, with
its real augmentation, optimiser and momentum updates: warm-up steps are excluded, then the
step time is the median over the measured window (see common.StepPlan for how long the window
is). Baseline and module runs of a method follow each other, so their ratio is measured in the
same run under the same conditions. Every run also counts the FLOPs of one extra step (used by
`efficiency`); the MoCo v2 runs profile one more step (profile_<setting>[_synth].txt).
"""

from __future__ import annotations

from benchmarks.common import Context, Setting, default_setting, paper_setting, stats, target, timed_pretrain

MODULE_TARGET = 1.5  # module step time <= 1.5x the baseline's (issue 9)
PROFILED_METHOD = "mocov2"


def registered_methods() -> list[str]:
    """The SSL methods (the module's overhead is measured on each); not the supervised reference."""
    from finesyn.methods import METHODS

    return sorted(name for name, cls in METHODS.items() if not cls.uses_labels)


def _run_one(ctx: Context, setting: Setting, method: str, synth: bool) -> dict:
    plan = ctx.plan(setting.name)
    profile = method == PROFILED_METHOD
    rec = timed_pretrain(setting, method, synth, plan, count_flops=True, profile=profile)
    step = stats(rec.measured)
    bs = setting.cfg.batch_size
    out = {
        "setting": setting.name,
        "method": method,
        "synth": synth,
        "backbone": setting.cfg.backbone,
        "crop_size": setting.crop,
        "batch_size": bs,
        "plan": plan.as_dict(),
        "first_step_s": round(rec.first_step_s, 4),
        "warmup_s": [round(v, 4) for v in rec.warmup],
        "step_s": step,
        "images_per_s": bs / step["median"] if step["median"] else None,
        "flops_per_step": rec.flops,
        "achieved_gflops": (rec.flops / step["median"] / 1e9) if rec.flops and step["median"] else None,
        "profile_file": None,
        "profile_top": rec.profile_top,
    }
    if rec.profile_table is not None:
        name = f"profile_{setting.name}{'_synth' if synth else ''}.txt"
        header = (
            f"# torch.profiler, one steady-state pretraining step: {setting.name} setting, {method}{' + module' if synth else ''}, "
            f"{setting.cfg.backbone} {setting.crop} px, batch {bs}, {ctx.mode} mode\n"
            f"# measured median step {step['median']:.4f} s; sorted by self CPU time\n"
        )
        (ctx.out / name).write_text(header + rec.profile_table + "\n")
        out["profile_file"] = name
    ctx.log(
        f"  throughput {setting.name} {method}{'+synth' if synth else ''}: median step {step['median']:.3f} s over {step['n']} steps, {out['images_per_s']:.1f} img/s"
    )
    return out


def run(ctx: Context) -> dict:
    settings = [(default_setting(ctx.quick), list(ctx.default_methods)), (paper_setting(ctx.quick), list(ctx.paper_methods))]
    runs, ratios, targets, described = [], [], [], {}
    for setting, methods in settings:
        described[setting.name] = setting.describe()
        for method in methods:
            base = _run_one(ctx, setting, method, False)
            mod = _run_one(ctx, setting, method, True)
            runs += [base, mod]
            b, m = base["step_s"]["median"], mod["step_s"]["median"]
            ratio = m / b if b and m else None
            ratios.append({"setting": setting.name, "method": method, "baseline_step_s": b, "module_step_s": m, "ratio": ratio})
            targets.append(
                target(
                    f"module_overhead.{setting.name}.{method}",
                    f"{method}: module step time / baseline step time ({setting.name} setting)",
                    ratio,
                    MODULE_TARGET,
                    "<=",
                    "x",
                    setting=setting.name,
                    method=method,
                )
            )
    ctx.shared["throughput_runs"] = runs
    return {"settings": described, "runs": runs, "module_ratios": ratios, "targets": targets}

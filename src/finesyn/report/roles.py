"""What each experiment is in the grid: its baseline, its start row, module pairs, ablations (experiments that differ only by `overrides`), effective settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from finesyn.config import REFERENCE_METHODS, Params, ParamsError


def flatten_overrides(overrides: dict, prefix: str = "") -> dict[str, object]:
    """{"synth": {"criteria": ["variance"]}, "nu": 1.0} -> {"synth.criteria": ["variance"], "nu": 1.0}."""
    out: dict[str, object] = {}
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_overrides(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def format_overrides(overrides: dict) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in flatten_overrides(overrides).items())


def baseline_of(params: Params, method: str, synth: bool) -> str | None:
    """The grid experiment with this method and synth flag and no overrides (first in grid order)."""
    for e in params.grid.experiments:
        exp = params.experiments[e]
        if exp.method == method and exp.synth == synth and not exp.overrides:
            return e
    return None


def ablations(params: Params) -> list[dict]:
    """Grid experiments that differ from a baseline (same method and synth flag, no overrides) only
    by `overrides`: [{"experiment", "reference" (None if not in the grid), "overrides" (str)}]."""
    out = []
    for e in params.grid.experiments:
        exp = params.experiments[e]
        if exp.overrides:
            out.append(
                {"experiment": e, "reference": baseline_of(params, exp.method, exp.synth), "overrides": format_overrides(exp.overrides)}
            )
    return out


def module_pairs(params: Params) -> list[tuple[str, str]]:
    """(baseline, baseline + module) pairs in the grid, e.g. (mocov2, mocov2_synth)."""
    pairs = []
    for e in params.grid.experiments:
        exp = params.experiments[e]
        if exp.synth and not exp.overrides:
            base = baseline_of(params, exp.method, False)
            if base is not None:
                pairs.append((base, e))
    return pairs


def first_baseline(params: Params) -> str | None:
    """The encoder of Fig. 2: the first SSL baseline of the grid, MoCo v2 if there is one."""
    cands = [
        e
        for e in params.grid.experiments
        if params.experiments[e].method not in REFERENCE_METHODS and not params.experiments[e].synth and not params.experiments[e].overrides
    ]
    mocov2 = [e for e in cands if params.experiments[e].method == "mocov2"]
    return cast("list[str | None]", mocov2 or cands or [None])[0]


def effective_settings(params: Params, resolved_path: Path | None) -> dict[str, dict]:
    """'<dataset>/<experiment>' -> effective pretrain settings: reports/params.resolved.json (the
    validate stage's record) when it exists, else computed the same way from params."""
    if resolved_path is not None and Path(resolved_path).is_file():
        runs = json.loads(Path(resolved_path).read_text()).get("runs", {})
        missing = [f"{d}/{e}" for d in params.grid.datasets for e in params.grid.experiments if f"{d}/{e}" not in runs]
        if missing:
            raise ParamsError(f"{resolved_path}: no settings for {missing} (stale: run the validate stage)")
        return runs
    from finesyn.run_identity import run_settings

    return {f"{d}/{e}": run_settings(params, d, e) for d in params.grid.datasets for e in params.grid.experiments}


def makes_pairs(params: Params, experiment: str) -> bool:
    """Whether the run decodes pairs (L_Cp): a module run with ν > 0 (ν = 0 runs are Fig. 5's α-only ones).
    The report's one reading of ν (finesyn.objective's rule)."""
    return params.experiments[experiment].synth and params.pretrain_for(experiment).nu > 0


def pair_experiments(params: Params) -> list[tuple[str, str]]:
    """(dataset, experiment) of the grid's runs that decode pairs."""
    return [(d, e) for d in params.grid.datasets for e in params.grid.experiments if makes_pairs(params, e)]

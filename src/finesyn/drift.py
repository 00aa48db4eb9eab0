"""This run's metrics against the committed ones: did a rerun reproduce them, to the last digit, to
float rounding, or not at all?

Bit-exactness holds on the same machine with the same library versions. Another CPU (another SIMD
level or BLAS) rounds float sums in another order: continuous numbers (mAP) then move in their last
digits, and training, which amplifies such differences over hundreds of steps, can move top-1 by
whole points. The note says which case a user is in and names both machines.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from finesyn.paths import RunPaths

# half a unit of the tables' last printed digit (two decimals): below it the printed tables are the same
LAST_DIGITS = 0.005


def committed_json(path: Path) -> dict | None:
    """``path`` as committed at HEAD, or None (no git, untracked, or not JSON)."""
    try:
        r = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent, capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def value_at(d: Any, path: tuple[str, ...]) -> Any:
    """``d[path[0]][path[1]]…``, or None where a level is missing (a metrics file's column)."""
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _machine(d: dict | None) -> str | None:
    """The CPU by name and, where recorded, by family/model/stepping and flags (one marketing name covers
    several CPUs), with the SIMD level torch dispatches to, its BLAS and its build."""
    m = d.get("machine") if isinstance(d, dict) else None
    if not isinstance(m, dict):
        return None
    ident = f" {m['cpu_family_model_stepping']}" if m.get("cpu_family_model_stepping") else ""
    extra = "".join(f", {label} {m[k]}" for k, label in (("cpu_flags_digest", "flags"), ("torch_build", "torch")) if m.get(k))
    return f"{m.get('cpu_model')}{ident} ({m.get('torch_cpu_capability')}, {m.get('torch_blas')}{extra})"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def compare(files: list[Path], columns: list[tuple[str, str, tuple[str, ...]]]) -> dict:
    """Every column value of ``files`` (metrics JSONs named like the columns' files; other files are
    skipped) vs HEAD. The machines come from each metrics file's meta record (``RunPaths.meta_of``)."""
    out: dict[str, Any] = {
        "files": 0,
        "values": 0,
        "untracked": 0,
        "max_abs_diff": 0.0,
        "worst": None,
        "committed_machines": set(),
        "this_machine": None,
    }
    names = {name for _, name, _ in columns}
    for path in (p for p in files if p.name in names):
        old = committed_json(path)
        if old is None:
            out["untracked"] += 1
            continue
        new = json.loads(path.read_text())
        meta = RunPaths.meta_of(path)
        out["files"] += 1
        out["this_machine"] = out["this_machine"] or _machine(_read_json(meta))
        out["committed_machines"].add(_machine(committed_json(meta)) or _machine(old))  # or: committed before the meta split
        for header, name, key in columns:
            a, b = value_at(new, key), value_at(old, key)
            if name != path.name or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            out["values"] += 1
            if abs(a - b) > out["max_abs_diff"]:
                out["max_abs_diff"], out["worst"] = abs(a - b), f"{path} {header}: {b:g} committed, {a:g} now"
                out["worst_at"] = (str(path), header)
    return out


def note(d: dict, spread: dict[tuple[str, str], float] | None = None) -> str | None:
    """One sentence for the log; None when there is nothing committed to compare with. ``spread``: the
    seed-to-seed standard deviation of a (metrics file, column) where the grid has several seeds."""
    if not d["values"]:
        return None
    n = f"{d['values']} values in {d['files']} committed metrics files"
    if d["max_abs_diff"] == 0:
        return f"metrics equal the committed ones exactly ({n})"
    if d["max_abs_diff"] <= LAST_DIGITS:
        return (
            f"metrics differ from the committed ones only in the last digits (max |Δ| {d['max_abs_diff']:.2g}, "
            f"below the tables' 0.01; {n}): float rounding, as expected on another CPU or BLAS"
        )
    committed = sorted(m for m in d["committed_machines"] if m) or ["a machine the committed files do not record"]
    machines = f"committed on {', '.join(committed)}, rerun on {d['this_machine'] or 'an unrecorded machine'}"
    sd = (spread or {}).get(d.get("worst_at") or ("", ""))
    if sd is None:
        verdict = (
            "this grid has one seed per cell, so the seeds' spread of that number is unknown here: rerun with more "
            "grid.seeds before reading it as a change, and check that code and params are the committed ones"
        )
    elif d["max_abs_diff"] <= 2 * sd:
        verdict = (
            f"within the seeds' spread of that number (2 sd = {2 * sd:.2f}): rounding amplified by training; "
            "commit the new dvc.lock and metrics only to make this machine the reference, and say so"
        )
    else:
        verdict = (
            f"beyond the seeds' spread of that number (2 sd = {2 * sd:.2f}): more than another machine's rounding; "
            "check that code, params and data are the committed ones before committing anything"
        )
    return (
        f"metrics differ from the committed ones by up to {d['max_abs_diff']:.2f} ({d['worst']}; {n}): {machines}; "
        f"{verdict}; bit-exactness holds only on the same machine and library versions (README, Reproducibility)"
    )

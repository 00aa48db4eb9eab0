"""Run the benchmarks: `python -m benchmarks.run [--quick]` (what `make bench` runs).

Writes <out>/results.json (every measured value, the machine, the targets with pass/fail),
<out>/results.md (summary tables) and <out>/profile_*.txt. Default <out>: benchmarks/ in full
mode, benchmarks/quick/ with --quick (so a smoke run never overwrites real numbers).

--quick: tiny sizes, every code path, no meaningful number (< 3 minutes; the test suite runs it).
Full mode: see each module's docstring; ~14 minutes on 2 cores, ~60 % of it the end-to-end
`dvc repro` (budget in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import BENCH_DIR, DEPS_DIR, Context

SCHEMA = "finesyn-bench/1"
SECTIONS = ("machine", "throughput", "peer", "parity", "efficiency", "evaluation", "stage_memory", "e2e")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: exercise every code path fast (numbers mean nothing)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: benchmarks/, or benchmarks/quick/ with --quick)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)} (machine always runs)")
    ap.add_argument(
        "--methods",
        default="all",
        help="methods timed at the params.yaml setting: comma-separated, or 'all' (default: every registered method)",
    )
    ap.add_argument(
        "--paper-methods", default="mocov2", help="methods timed at the paper-like setting: comma-separated, or 'all' (default: mocov2)"
    )
    ap.add_argument(
        "--retrieval-n",
        type=int,
        default=None,
        help="number of random features for the retrieval comparison (default 50000; 2000 with --quick)",
    )
    ap.add_argument(
        "--e2e-params", type=Path, default=None, help="params file for the end-to-end run's fresh copy (default: the real params.yaml)"
    )
    ap.add_argument("--deps-dir", type=Path, default=DEPS_DIR, help="directory holding the peer (lightly), installed by `make bench`")
    return ap.parse_args(argv)


def _modules():
    from benchmarks import e2e, efficiency, evaluation, machine, parity, peer, stage_memory, throughput

    return {
        "machine": machine,
        "throughput": throughput,
        "peer": peer,
        "parity": parity,
        "efficiency": efficiency,
        "evaluation": evaluation,
        "stage_memory": stage_memory,
        "e2e": e2e,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    out = args.out or (BENCH_DIR / "quick" if args.quick else BENCH_DIR)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(SECTIONS) if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()} | {"machine"}
    unknown = wanted - set(SECTIONS)
    if unknown:
        sys.exit(f"--only: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    from benchmarks.throughput import registered_methods

    def methods(opt: str, value: str) -> tuple[str, ...]:
        chosen = tuple(registered_methods()) if value == "all" else tuple(m.strip() for m in value.split(",") if m.strip())
        bad = set(chosen) - set(registered_methods())
        if bad or not chosen:
            sys.exit(f"{opt}: unknown or no method(s) {sorted(bad)}; registered: {registered_methods()}")
        return chosen

    default_methods, paper_methods = methods("--methods", args.methods), methods("--paper-methods", args.paper_methods)
    if args.e2e_params is not None and not args.e2e_params.is_file():
        sys.exit(f"--e2e-params: {args.e2e_params} not found")
    ctx = Context(
        quick=args.quick,
        out=out,
        default_methods=default_methods,
        paper_methods=paper_methods,
        retrieval_n=args.retrieval_n or (2000 if args.quick else 50_000),
        deps_dir=args.deps_dir,
        e2e_params=args.e2e_params.resolve() if args.e2e_params else None,
    )

    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data: dict = {
        "schema": SCHEMA,
        "mode": ctx.mode,
        "started": started,
        "argv": sys.argv[1:] if argv is None else argv,
        "options": {
            "methods": list(default_methods),
            "paper_methods": list(paper_methods),
            "retrieval_n": ctx.retrieval_n,
            "e2e_params": str(ctx.e2e_params) if ctx.e2e_params else "params.yaml",
            "sections": [s for s in SECTIONS if s in wanted],
        },
        "machine": {},
        "sections": {},
        "targets": [],
    }
    mods = _modules()
    for name in SECTIONS:
        if name not in wanted:
            data["sections"][name] = {"status": "skipped", "reason": "not selected (--only)", "wall_s": 0.0, "results": {}}
            continue
        ctx.log(f"[bench] {name} ({ctx.mode})")
        ts = time.perf_counter()
        try:
            res = mods[name].run(ctx)
            status, reason = res.pop("status", "ok"), res.pop("reason", None)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not lose the others' numbers
            res, status, reason = {}, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
            ctx.log(f"[bench] {name} FAILED: {type(e).__name__}: {e}")
        wall = round(time.perf_counter() - ts, 2)
        data["targets"] += res.pop("targets", [])
        if name == "machine" and res:
            data["machine"] = {**res["info"], "matmul_peak_start": res["matmul_peak_start"]}
            ctx.shared["matmul_peak_start"] = res["matmul_peak_start"]
        data["sections"][name] = {"status": status, "reason": reason, "wall_s": wall, "results": res}
        ctx.log(f"[bench] {name}: {status} in {wall:.1f} s")
    data["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    data["wall_s"] = round(time.perf_counter() - t0, 2)
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data["notes"] = notes(data)

    from benchmarks.summary import render

    data = _finite(data)
    _atomic_write(out / "results.json", json.dumps(data, indent=2, default=_jsonable, allow_nan=False) + "\n")
    _atomic_write(out / "results.md", render(data))
    ctx.log(f"[bench] wrote {out / 'results.json'} and {out / 'results.md'} in {data['wall_s']:.1f} s")
    return 1 if any(s["status"] == "error" for s in data["sections"].values()) else 0


def notes(data: dict) -> list[str]:
    out = []
    if data["mode"] == "quick":
        out.append("quick mode: tiny sizes to exercise every code path; the numbers are not benchmarks")
    m = data["machine"]
    cores = m.get("usable_cores") or 1
    for when in ("load_average_start", "load_average_end"):
        load = (m.get(when) or [0])[0]
        if load > 0.5 * cores:
            out.append(f"machine busy: 1-min load average {load} at {when.split('_')[-1]} on {cores} usable cores; timings are unreliable")
    return out


def _finite(o):
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())

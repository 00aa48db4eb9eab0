"""End-to-end wall time of the default `dvc repro` in a fresh copy of the project (issue 9, item 5).

The copy is what a fresh clone holds (tracked + untracked-not-ignored files, without results:
metrics/, reports/, dvc.lock), made a git repository of its own, with the real params.yaml.
Full mode times `dvc repro` there, then a second `dvc repro` (which must do nothing). Quick mode
only exercises the same path -- copy, git, dvc resolving the real graph there -- with `dvc status`
(`dvc repro --dry` cannot: it fails on the prepared data that only a real run creates); nothing
is timed as a benchmark.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, Context, run_measured, tool_env

SKIP_PREFIXES = ("metrics/", "reports/", "dvc.lock", "benchmarks/")


def copy_project(dest: Path) -> int:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    n = 0
    for f in files:
        if f.startswith(SKIP_PREFIXES) or not (ROOT / f).is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
        n += 1
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=bench@localhost", "-c", "user.name=bench", "commit", "-qm", "fresh copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return n


def run(ctx: Context) -> dict:
    with tempfile.TemporaryDirectory(prefix="finesyn-bench-e2e-") as tmp:
        work = Path(tmp) / "finesyn"
        work.mkdir()
        n = copy_project(work)
        if ctx.e2e_params is not None:  # --e2e-params: another params file (e.g. a tiny one to check the path)
            shutil.copy2(ctx.e2e_params, work / "params.yaml")
        env = tool_env()
        if ctx.quick:
            r = run_measured(["dvc", "status"], cwd=work, env=env, timeout=300)
            ok = r["returncode"] == 0
            ctx.log(f"  e2e: dvc status in a fresh copy: {'ok' if ok else 'FAILED'} ({r['wall_s']:.1f} s)")
            return {
                "status": "skipped" if ok else "error",
                "reason": "full mode only" if ok else "dvc status failed in the fresh copy",
                "files_copied": n,
                "quick_check": {
                    "cmd": "dvc status",
                    "returncode": r["returncode"],
                    "wall_s": r["wall_s"],
                    "stages_listed": r["stdout"].count("changed"),
                    **({} if ok else {"stderr_tail": r["stderr"][-1500:]}),
                },
            }
        first = run_measured(["dvc", "repro"], cwd=work, env=env, timeout=3600)
        ok = first["returncode"] == 0
        ctx.log(f"  e2e: dvc repro {first['wall_s']:.1f} s{'' if ok else ' FAILED'}")
        out = {
            "status": "ok" if ok else "error",
            "params": str(ctx.e2e_params) if ctx.e2e_params else "params.yaml (the real one)",
            "files_copied": n,
            "dvc_repro": {"returncode": first["returncode"], "wall_s": first["wall_s"], "peak_rss_mib": first["peak_rss_mib"]},
        }
        if not ok:
            out["reason"] = "dvc repro failed"
            out["dvc_repro"]["stderr_tail"] = first["stderr"][-3000:]
            return out
        second = run_measured(["dvc", "repro"], cwd=work, env=env, timeout=600)
        out["dvc_repro_noop"] = {"returncode": second["returncode"], "wall_s": second["wall_s"]}
        report = work / "reports" / "results.md"
        out["results_md"] = report.read_text()[:4000] if report.is_file() else None
        return out

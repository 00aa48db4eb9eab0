"""The benchmark harness (benchmarks/, issue 9): `python -m benchmarks.run --quick` runs every
benchmark at tiny sizes and writes results.json in the documented schema. The numbers are not
checked (quick mode's mean nothing), only that each one is there, of the right kind, and sane."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import StepPlan, run_measured  # noqa: E402
from benchmarks.peer import load_lightly  # noqa: E402

SECTIONS = {"machine", "throughput", "peer", "parity", "efficiency", "evaluation", "stage_memory", "e2e"}
STAGES = ["validate", "prepare", "pretrain", "extract", "probe", "retrieve", "report"]


def _strict(text: str):
    def bad(c):
        raise ValueError(f"non-finite number {c} in results.json")

    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard only: its speed is the benchmark's business, not a test's
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 0, f"benchmarks.run --quick failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return out, _strict((out / "results.json").read_text())


def _pos(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_top_level_and_machine(quick):
    out, d = quick
    assert d["schema"] == "finesyn-bench/1" and d["mode"] == "quick"
    assert set(d["sections"]) == SECTIONS
    assert _pos(d["wall_s"])
    for name, s in d["sections"].items():
        assert s["status"] in ("ok", "skipped"), (name, s.get("reason"))
        assert isinstance(s["wall_s"], (int, float)) and isinstance(s["results"], dict)
    m = d["machine"]
    for key in (
        "cpu_model",
        "usable_cores",
        "logical_cores",
        "torch_threads",
        "torch",
        "numpy",
        "git_revision",
        "date",
        "load_average_start",
        "load_average_end",
    ):
        assert m.get(key) is not None, key
    assert _pos(m["matmul_peak_start"]["peak_gflops"])
    assert any("quick mode" in n for n in d["notes"])
    md = (out / "results.md").read_text()
    assert "## Targets" in md and "## Pretraining throughput" in md


def test_throughput_every_method_with_and_without_module(quick):
    _, d = quick
    from finesyn.methods import METHODS

    t = d["sections"]["throughput"]["results"]
    runs = {(r["setting"], r["method"], r["synth"]): r for r in t["runs"]}
    paper = d["options"]["paper_methods"]
    ssl = [m for m, cls in METHODS.items() if not cls.uses_labels]  # the supervised reference takes no module
    want = [("default", m, s) for m in ssl for s in (False, True)] + [("paper", m, s) for m in paper for s in (False, True)]
    assert sorted(runs) == sorted(want) and "supervised" not in ssl
    for r in runs.values():
        assert r["step_s"]["n"] == 2 and _pos(r["step_s"]["median"]) and _pos(r["images_per_s"])
        assert _pos(r["flops_per_step"]) and _pos(r["achieved_gflops"])
    for r in runs.values():  # the module adds work: more FLOPs than the same method's baseline
        if r["synth"]:
            assert r["flops_per_step"] > runs[(r["setting"], r["method"], False)]["flops_per_step"]
    ratios = {(x["setting"], x["method"]): x["ratio"] for x in t["module_ratios"]}
    assert set(ratios) == {(s, m) for s, m, _ in want} and all(_pos(v) for v in ratios.values())
    assert set(t["settings"]) == {"default", "paper"}


def _lightly_section(d: dict, name: str) -> dict | None:
    """The section's results, or None when it was skipped for want of lightly (saying so)."""
    p = d["sections"][name]
    if p["status"] == "skipped":
        assert "lightly" in p["reason"] or ".bench-deps" in p["reason"]
        return None
    return p["results"]


def test_peer_ran_or_says_why(quick):
    _, d = quick
    if (p := _lightly_section(d, "peer")) is None:
        return
    cs = p["comparisons"]
    assert [c["setting"] for c in cs] == ["default", "paper"]
    for c in cs:
        assert _pos(c["ours"]["step_s"]["median"]) and _pos(c["peer"]["step_s"]["median"]) and _pos(c["ratio_ours_over_peer"])
        assert c["ours"]["step_s"]["n"] == c["peer"]["step_s"]["n"] == 2
        assert c["flops_match"], (c["ours"]["flops_per_step"], c["peer"]["flops_per_step"])  # the same computation


def test_parity_ran_or_says_why(quick):
    _, d = quick
    if (r := _lightly_section(d, "parity")) is None:
        return
    assert set(r["runs"]) == {"ours", "lightly"} and all(len(v) == len(r["seeds"]) for v in r["runs"].values())
    for metric in ("linear_top1", "knn20_top1"):
        m = r[metric]
        assert 0 <= m["ours_mean"] <= 100 and 0 <= m["lightly_mean"] <= 100 and _pos(m["binomial_se"])
        assert m["diff"] == pytest.approx(m["ours_mean"] - m["lightly_mean"])
    assert {t["id"] for t in d["targets"] if t["id"].startswith("parity.")} == {"parity.mocov2.linear_top1", "parity.mocov2.knn20_top1"}


def test_efficiency_and_profiles(quick):
    out, d = quick
    e = d["sections"]["efficiency"]["results"]
    assert _pos(e["peak_gflops"])
    assert e["steps"] and all(_pos(r["fraction_of_peak"]) for r in e["steps"])
    files = {p["file"] for p in e["profiles"]}
    assert files == {"profile_default.txt", "profile_default_synth.txt", "profile_paper.txt", "profile_paper_synth.txt"}
    for f in files:
        text = (out / f).read_text()
        assert "Self CPU" in text and "aten::" in text
    assert all(p["top_ops"] for p in e["profiles"])


def test_evaluation(quick):
    _, d = quick
    ev = d["sections"]["evaluation"]["results"]
    assert [x["setting"] for x in ev["extraction"]] == ["default", "paper"]
    assert all(_pos(x["images_per_s"]) for x in ev["extraction"])
    assert ev["probe"] and all(_pos(x["fit_time_s"]) for x in ev["probe"])
    r = ev["retrieval"]
    assert set(r["implementations"]) == {"sort", "numpy"} and r["n"] == 2000
    ref = r["implementations"]["numpy"]
    assert ref["queries"] == 500 and ref["search_s_all_queries_estimated"] == pytest.approx(
        ref["search_s"] * 4, abs=4 * 5e-4 + 5e-4
    )  # both rounded to 1 ms
    ag = r["agreement"]
    assert set(ag["implementations"]) == {"sort", "faiss", "numpy"} and ag["n"] == 1000
    for impl in [*r["implementations"].values(), *ag["implementations"].values()]:
        assert _pos(impl["search_s"]) and _pos(impl["peak_rss_mib"])
    assert ag["max_metric_diff_pct"] < 1e-3  # both engines agree with the reference
    assert _pos(r["ratio_ours_over_numpy"]) and _pos(ag["ratio_faiss_over_sort"])


def test_stage_memory_per_process(quick):
    _, d = quick
    sm = d["sections"]["stage_memory"]["results"]
    stages = {s["stage"]: s for s in sm["stages"]}
    assert list(stages) == STAGES
    assert all(s["status"] == "ok" and _pos(s["peak_rss_mib"]) for s in stages.values())
    # prepare never imports torch: a per-process peak is far below a stage that does
    assert stages["prepare"]["peak_rss_mib"] < 0.5 * stages["pretrain"]["peak_rss_mib"]


def test_e2e_is_full_mode_only(quick):
    _, d = quick
    e = d["sections"]["e2e"]
    assert e["status"] == "skipped" and "full mode" in e["reason"]
    assert e["results"]["quick_check"]["returncode"] == 0  # dvc resolves the graph in a fresh copy


def test_targets_next_to_measured_values(quick):
    _, d = quick
    from finesyn.methods import METHODS

    ids = {t["id"] for t in d["targets"]}
    assert {f"module_overhead.default.{m}" for m, cls in METHODS.items() if not cls.uses_labels} <= ids
    assert {"peer.default.mocov2", "peer.paper.mocov2", "efficiency.paper.step_fraction_of_peak"} <= ids
    for t in d["targets"]:
        assert t["comparison"] in ("<=", ">=") and _pos(t["threshold"])
        assert t["passed"] in (True, False, None)
        assert (t["passed"] is None) == (t["measured"] is None)


def test_peer_skipped_without_its_directory(tmp_path):
    L, reason = load_lightly(tmp_path / "absent")
    assert L is None and "does not exist" in reason and "lightly==" in reason


def test_peak_rss_is_the_child_alone():
    # this process may hold hundreds of MiB (torch); the child allocates 150 MiB and reports about that
    r = run_measured([sys.executable, "-S", "-c", "b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert r["returncode"] == 0
    assert 150 <= r["peak_rss_mib"] < 250


def test_step_plan_sizes_the_window_by_time():
    plan = StepPlan(warmup=2, min_steps=5, max_steps=25, target_s=10.0)
    assert plan.steps_for(1.0) == 10
    assert plan.steps_for(0.1) == 25
    assert plan.steps_for(30.0) == 5
    assert StepPlan(1, 2, 2).steps_for(1.0) == 2

"""finesyn.drift: the note that tells a user whether rerun metrics reproduce the committed ones."""

import json
import subprocess

from finesyn import drift
from finesyn.paths import RunPaths

COLS = [("linear top-1", "probe.json", ("top1",)), ("mAP", "retrieval.json", ("map",))]


def _repo(tmp_path, probe: dict, retrieval: dict, machine: dict | None = None):
    """Committed metrics files (numbers) with their meta records (the machine that made them)."""
    d = tmp_path / "metrics"
    d.mkdir()
    (d / "probe.json").write_text(json.dumps(probe))
    (d / "retrieval.json").write_text(json.dumps(retrieval))
    for name in ("probe", "retrieval"):
        (d / f"{name}.meta.json").write_text(json.dumps({"machine": machine} if machine else {}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    return [d / "probe.json", d / "retrieval.json"]


def _rewrite(path, **change):
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))


MACHINE_A = {"cpu_model": "AMD EPYC", "torch_cpu_capability": "AVX512", "torch_blas": "mkl"}
MACHINE_B = {"cpu_model": "Intel Xeon", "torch_cpu_capability": "AVX2", "torch_blas": "mkl"}


def test_identical_rounding_and_real_differences_are_told_apart(tmp_path):
    files = _repo(tmp_path, {"top1": 13.4}, {"map": 0.123456789}, machine=MACHINE_A)
    meta_files = [RunPaths.meta_of(f) for f in files]
    assert drift.note(drift.compare(files + meta_files, COLS)).startswith("metrics equal the committed ones exactly (2 values in 2")

    _rewrite(files[1], map=0.123456789 + 3e-6)  # a float-rounding difference, invisible in the tables
    text = drift.note(drift.compare(files, COLS))
    assert "only in the last digits" in text and "3e-06" in text

    _rewrite(files[0], top1=14.8)  # training moved top-1 by 1.4 points, on another machine (its meta record says)
    _rewrite(meta_files[0], machine=MACHINE_B)
    text = drift.note(drift.compare(files, COLS))
    assert "by up to 1.40" in text and "linear top-1: 13.4 committed, 14.8 now" in text
    assert "committed on AMD EPYC (AVX512, mkl), rerun on Intel Xeon (AVX2, mkl)" in text


def test_untracked_metrics_give_no_note(tmp_path):
    files = _repo(tmp_path, {"top1": 1.0}, {"map": 0.5})
    new = tmp_path / "metrics" / "other"
    new.mkdir()
    (new / "probe.json").write_text(json.dumps({"top1": 50.0}))
    d = drift.compare([new / "probe.json"], COLS)
    assert d["untracked"] == 1 and drift.note(d) is None
    assert drift.compare(files + [new / "probe.json"], COLS)["max_abs_diff"] == 0


def test_a_real_difference_is_read_against_the_seeds_spread_and_names_the_cpu_exactly(tmp_path):
    """Two CPUs sold under one name differ by family/model/stepping and flags; a difference beyond the last digits
    is within or beyond the seeds' spread of that number (2 sd), or that spread is unknown (one seed)."""
    a = {**MACHINE_A, "cpu_family_model_stepping": "25/17/1", "cpu_flags_digest": "aaaaaaaaaaaa", "torch_build": "2.14.1 (abc)"}
    b = {**MACHINE_A, "cpu_family_model_stepping": "25/1/1", "cpu_flags_digest": "bbbbbbbbbbbb", "torch_build": "2.14.1 (abc)"}
    files = _repo(tmp_path, {"top1": 13.4}, {"map": 0.5}, machine=a)
    _rewrite(files[0], top1=14.8)
    _rewrite(RunPaths.meta_of(files[0]), machine=b)
    d = drift.compare(files, COLS)
    text = drift.note(d)
    assert "committed on AMD EPYC 25/17/1 (AVX512, mkl, flags aaaaaaaaaaaa, torch 2.14.1 (abc))" in text
    assert "rerun on AMD EPYC 25/1/1 (AVX512, mkl, flags bbbbbbbbbbbb" in text
    assert "one seed per cell, so the seeds' spread of that number is unknown" in text
    at = (str(files[0]), "linear top-1")
    assert "within the seeds' spread of that number (2 sd = 2.00)" in drift.note(d, {at: 1.0})
    assert "beyond the seeds' spread of that number (2 sd = 1.00)" in drift.note(d, {at: 0.5})


def test_the_report_gives_the_drift_note_each_cells_seed_spread():
    from finesyn.report.build import seed_spread

    class P:  # columns(params) reads only retrieve.knn_ks
        class retrieve:
            knn_ks: list[int] = []

    row = {
        "values": {"linear top-1": [10.0, 12.0, 14.0], "mAP": [5.0]},
        "sources": [{"files": [f"m/seed{s}/probe.json", f"m/seed{s}/retrieval.json"]} for s in range(3)],
    }
    spread = seed_spread(P, [row])
    assert spread[("m/seed1/probe.json", "linear top-1")] == 2.0  # sample sd of 10, 12, 14
    assert not any(h == "mAP" for _, h in spread)  # one value: no spread

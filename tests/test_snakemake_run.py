"""The graph run by Snakemake from scratch, and any copy of the project running its own library (a file of its
own, so pytest-xdist runs it beside test_pipeline.py's chain of DVC runs)."""

import base64
import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from pipeline_helpers import make_project, run, tool_env

pytestmark = pytest.mark.slow


def test_snakemake_runs_the_graph_end_to_end(tmp_path):
    proj = make_project(tmp_path)
    run(["snakemake", "--cores", "2"], proj)
    for exp in ("random_init", "mocov2_synth"):
        assert (proj / "metrics/synthetic" / exp / "seed0/retrieval.json").is_file()
    assert "| mocov2_synth |" in (proj / "reports/results.md").read_text()
    # docs/scale-out.md: `dvc commit -f` records Snakemake's outputs; DVC then finds nothing to rerun
    run(["dvc", "commit", "-f"], proj)
    status = json.loads(run(["dvc", "status", "--json"], proj).stdout)
    assert {k for k, why in status.items() if why != ["always changed"]} == set(), status
    assert run(["dvc", "repro", "--dry"], proj).stdout.count("Running stage") == 1  # the raw manifest alone

    # `snakemake --report` after the run embeds the report stage's own tables and figures
    run(["snakemake", "--report", "report.html"], proj)
    report = (proj / "report.html").read_text()
    figures = sorted((proj / "reports/figures").glob("*.png"))
    assert {f.name for f in figures} >= {"fig4_pairs_synthetic_mocov2_synth.png", "curves_synthetic.png"}
    pipeline_report = (proj / "reports/index.html").read_text()
    for f in figures:
        data = base64.b64encode(f.read_bytes()).decode()
        assert data in report, f"{f.name} is not in the Snakemake report"
        assert data in pipeline_report, f"{f.name} is not in reports/index.html"  # the same figures as the pipeline's report
    for table in ("reports/index.html", "reports/results.csv", "reports/results.md"):
        assert base64.b64encode((proj / table).read_bytes()).decode() in report, f"{table} is not in the Snakemake report"
    assert "Fig. 4 analogue: generated pairs" in report and "Training curves: every logged" in report  # per-figure captions


def test_snakemake_interrupted_in_pretrain_resumes_to_the_same_encoder(tmp_path):
    """Ctrl-C during a pretrain job: the stage checkpoints and exits, Snakemake drops the job's outputs but not
    the checkpoints (not an output), and the next `snakemake --profile profiles/local` (docs/scale-out.md; it
    sets rerun-incomplete, which a bare `snakemake` asks for by name where Snakemake kept the job's incomplete
    marker) resumes from them to the encoder an
    uninterrupted run writes (byte-identical: same machine)."""
    proj = make_project(tmp_path / "p")
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    raw["pretrain"]["epochs"] = 6  # 12 steps: room to interrupt after the first checkpoint
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    target, ckpts = "models/synthetic/mocov2_synth/seed0", proj / "checkpoints/synthetic/mocov2_synth/seed0"
    snakemake = ["snakemake", "--profile", "profiles/local", "--cores", "1", target]
    job = subprocess.Popen(
        snakemake,
        cwd=proj,
        env=tool_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(ckpts.rglob("step_*.pt")):
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint before the job ended"
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C sends: Snakemake and the job's processes
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert not (proj / target / "encoder.pt").exists()
    bare = run(["snakemake", "--cores", "1", target], proj, check=False)
    # Ctrl-C reaches Snakemake and the job together. Where Snakemake's own interrupt handling runs first it keeps the
    # job's incomplete marker, and a bare rerun asks for --rerun-incomplete (which the profile sets). Where the job's
    # exit (it checkpoints and stops) is seen first, Snakemake treats it as a failed job and drops its outputs and
    # marker, and a bare rerun runs it (seen once in a loaded `make test`). Either way the rerun resumes.
    if bare.returncode != 0:
        assert "--rerun-incomplete" in bare.stdout + bare.stderr, bare.stderr[-2000:]
        run(snakemake, proj)
    record = json.loads((proj / target / "train.json").read_text())
    assert 1 <= record["resumed_from_step"] < record["steps"] == 12, record
    reference = ["python", "stages/pretrain.py", "--dataset", "synthetic", "--experiment", "mocov2_synth", "--seed", "0"]
    run([*reference, "--data", "data/prepared/synthetic", "--out", "ref", "--checkpoints", "ref_ckpt"], proj)
    assert (proj / target / "encoder.pt").read_bytes() == (proj / "ref/encoder.pt").read_bytes()


@pytest.mark.parametrize("stage", ["validate", "prepare", "pretrain", "extract", "probe", "retrieve", "report"])
def test_a_copy_of_the_project_runs_its_own_library(tmp_path, stage):
    """A queued experiment's workspace (or any copy) must run the finesyn next to it, not the
    editable install's: here the copy's library refuses to import, and the stage must hit that."""
    from pipeline_helpers import ROOT

    dest = tmp_path / "copy"
    (dest / "src" / "finesyn").mkdir(parents=True)
    (dest / "stages").mkdir()
    (dest / "stages" / f"{stage}.py").write_bytes((ROOT / "stages" / f"{stage}.py").read_bytes())
    (dest / "stages" / "_local_src.py").write_bytes((ROOT / "stages" / "_local_src.py").read_bytes())
    (dest / "src" / "finesyn" / "__init__.py").write_text("raise ImportError('the copy s own finesyn was imported')\n")
    r = run(["python", f"stages/{stage}.py", "--help"], cwd=dest, check=False)
    assert r.returncode != 0 and "the copy s own finesyn was imported" in r.stderr, r.stderr[-2000:]

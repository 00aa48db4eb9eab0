"""The real tools on the real stage graph, with a tiny params.yaml: dvc repro, reruns, snakemake."""

import json

import pytest

from finesyn.graph import dvc_stages, snakemake_inputs
from pipeline_helpers import edited_params, make_project, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("proj"))
    run(["dvc", "repro"], proj)
    return proj


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_dvc_repro_writes_metrics_with_provenance(project):
    for exp in ("random_init", "mocov2_synth"):
        d = project / "metrics" / "synthetic" / exp / "seed0"
        probe, retr = json.loads((d / "probe.json").read_text()), json.loads((d / "retrieval.json").read_text())
        assert 0 <= probe["top1"] <= 100 and 0 <= retr["mAP"] <= 100
        for m in (probe, retr):
            assert m["seed"] == 0 and len(m["params_hash"]) == 16 and m["protocol"] and m["code_version"]
    assert (project / "models/synthetic/mocov2_synth/seed0/pairs.png").is_file()
    table = (project / "reports/results.md").read_text()
    assert "| random_init |" in table and "| mocov2_synth |" in table and "probe.json" in table


def test_second_repro_does_nothing(project):
    out = run(["dvc", "repro"], project).stdout
    assert ran_stages(out) == set(), out


def test_param_change_reruns_only_its_readers(project):
    try:
        with edited_params(project, lambda raw: raw["probe"].update(max_iter=60)):
            out = run(["dvc", "repro"], project).stdout
            assert ran_stages(out) == {"validate", "probe@synthetic-random_init-0", "probe@synthetic-mocov2_synth-0", "report"}, out
    finally:
        run(["dvc", "repro"], project)


def test_module_param_does_not_retrain_baselines(project):
    """pretrain.nu changes the synth run only; the baseline's stage reruns but reuses its checkpoint."""
    before = (project / "models/synthetic/random_init/seed0/encoder.pt").read_bytes()
    with edited_params(project, lambda raw: raw["pretrain"].update(nu=0.7)):
        out = run(["dvc", "repro"], project).stdout
        assert "pretrain@synthetic-mocov2_synth-0" in ran_stages(out)
        assert "extract@synthetic-random_init-0" not in ran_stages(out)  # identical encoder: nothing downstream reruns
        assert (project / "models/synthetic/random_init/seed0/encoder.pt").read_bytes() == before


def test_typo_in_unread_section_fails_dvc_repro(project):
    with edited_params(project, lambda raw: raw["report"].update(refrence_numbers=None)):
        r = run(["dvc", "repro"], project, check=False)
        assert r.returncode != 0
        assert "report.refrence_numbers: unknown key (did you mean 'reference_numbers'?)" in r.stdout + r.stderr
        r = run(["snakemake", "-n", "--cores", "1"], project, check=False)
        assert r.returncode != 0 and "report.refrence_numbers" in r.stdout + r.stderr


def snakemake_jobs(project) -> dict[str, dict]:
    """rule -> {input, output, shell} from a forced dry run: the DAG Snakemake would execute."""
    out = run(["snakemake", "-n", "-F", "-p", "--cores", "1"], project).stdout
    jobs, current = {}, None
    for line in out.splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            current = jobs.setdefault(line[5:-1], {"input": set(), "output": set(), "shell": None})
        elif current is not None and line.strip().startswith(("input:", "output:")):
            key, _, value = line.strip().partition(": ")
            current[key.rstrip(":")] = set(value.split(", "))
        elif current is not None and line.startswith("Shell command: "):
            current["shell"] = line.removeprefix("Shell command: ")
    return jobs


def test_snakemake_sees_the_same_graph_as_dvc(project):
    stages = dvc_stages(project)
    jobs = snakemake_jobs(project)
    assert set(jobs) - {"all"} == {st.rule_name for st in stages}
    for st in stages:
        job = jobs[st.rule_name]
        assert job["output"] == set(st.outs), st.name
        assert job["input"] == set(snakemake_inputs(st, stages)), st.name
        assert job["shell"] == f"{st.cmd.strip()} 2>&1 | tee logs/snakemake/{st.rule_name}.log", st.name
        assert job["output"] not in [jobs[o.rule_name]["output"] for o in stages if o is not st]
    # the input mapping keeps every DVC dependency: each is an input, inside one, or made of outputs that are
    for st in stages:
        inputs = snakemake_inputs(st, stages)
        for dep in st.deps:
            assert any(dep == i or dep.startswith(i + "/") or i.startswith(dep + "/") for i in inputs), (st.name, dep)


def test_snakemake_runs_the_graph_end_to_end(tmp_path):
    proj = make_project(tmp_path)
    run(["snakemake", "--cores", "2"], proj)
    for exp in ("random_init", "mocov2_synth"):
        assert (proj / "metrics/synthetic" / exp / "seed0/retrieval.json").is_file()
    assert "| mocov2_synth |" in (proj / "reports/results.md").read_text()

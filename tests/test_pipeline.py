"""The real tools on the real stage graph, with a tiny params.yaml: dvc repro, reruns, snakemake."""

import json
import re
import shutil
import subprocess
import time

import pytest
import yaml
from fixtures import make_imagefolder_tree, write_image
from pipeline_helpers import edited_params, make_project, run, tool_env

from finesyn.graph import PARAMS_STAMPS, dvc_stages, snakemake_inputs

pytestmark = pytest.mark.slow


FIRST_REPRO: dict[str, str] = {}  # the first `dvc repro`'s stderr: the stages' logs, as a file gets them


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("proj"))
    FIRST_REPRO["stderr"] = run(["dvc", "repro"], proj).stderr
    commit(proj, "baseline results")  # the state each test returns to (restore), as a user's commit would be
    return proj


def commit(project, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], project)


def restore(project) -> None:
    """Back to the committed baseline as a user would return to it: git restores params.yaml, dvc.lock and the
    metrics, `dvc checkout` the cached outputs. (`dvc repro` would do it too, at 30 s of reruns a time.)"""
    run(["git", "checkout", "-q", "--", "."], project)
    run(["dvc", "checkout", "--force"], project)


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


ALWAYS = {"raw_manifest@synthetic"}  # runs on every repro (it lists the raw tree, which no dep can name)


def stale(project) -> set[str]:
    """The stages `dvc status` calls changed, less those that are only `always_changed` (the raw manifests)."""
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    return {name for name, why in status.items() if why != ["always changed"]}


def test_dvc_repro_writes_metrics_with_provenance(project):
    for exp in ("random_init", "mocov2_synth"):
        d = project / "metrics" / "synthetic" / exp / "seed0"
        probe, retr = json.loads((d / "probe.json").read_text()), json.loads((d / "retrieval.json").read_text())
        assert 0 <= probe["top1"] <= 100 and 0 <= retr["mAP"] <= 100
        assert set(probe) == {"top1", "top5"} and set(retr) == {"rank1", "rank5", "mAP", "knn"} and set(retr["knn"]) == {"top1_k5"}
        for name in ("probe", "retrieval"):  # the record of the numbers: the meta file next to them
            m = json.loads((d / f"{name}.meta.json").read_text())
            assert m["seed"] == 0 and len(m["params_hash"]) == 16 and m["protocol"] and m["code_version"]
            # what makes floats differ across machines (issue 17.3): CPU, SIMD level, BLAS
            assert m["machine"]["cpu_model"] and m["machine"]["torch_cpu_capability"] and m["machine"]["torch_blas"]
    assert (project / "models/synthetic/mocov2_synth/seed0/pairs.png").is_file()
    recon = json.loads((project / "models/synthetic/mocov2_synth/seed0/train.json").read_text())["reconstruction"]
    assert recon["images"] > 0 and recon["gain_db"] == pytest.approx(recon["psnr_db"] - recon["mean_image_psnr_db"], abs=2e-3)
    table = (project / "reports/results.md").read_text()
    assert "## Fig. 4" in table and "mean PSNR of g(h)" in table
    assert "| random_init |" in table and "| mocov2_synth |" in table and "probe.json" in table
    # the class-logit Grad-CAM of every encoder on every test image: shares (%) of its mass on the bird and the marking
    evidence = table.split("## Where the class evidence lies: synthetic")[1]
    for exp in ("random_init", "mocov2_synth"):
        bird, marking = re.search(rf"\| {exp} \| 0 \| ([\d.]+) ± [\d.]+ \| ([\d.]+) ± [\d.]+ \|", evidence).groups()
        assert 0 < float(marking) < float(bird) < 100
        cells = json.loads((project / "reports/results.json").read_text())["synthetic"][exp]  # the same numbers, for programs
        assert f"{cells['class-logit Grad-CAM on marking (%)']['mean']:.2f}" == marking


def test_dvc_repro_logs_read_in_a_file(project):
    """`dvc repro > log 2>&1` (issue 19): every line timestamped (ISO 8601) and whole, every pretrain step
    line and extract progress line with its total and an ETA."""
    lines = FIRST_REPRO["stderr"].splitlines()
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING) [\w.]+: ")
    assert lines and all(iso.match(line) for line in lines), [line for line in lines if not iso.match(line)][:5]
    steps = [line for line in lines if ": step " in line and "val/" not in line]
    extract = [line for line in lines if "finesyn.progress: extract " in line]
    assert steps and extract
    assert all(re.search(r" step \d+/\d+ \(epoch \d+/\d+\) .* img/s ETA \d+:\d\d:\d\d$", line) for line in steps), steps
    assert all(re.search(r" extract \S+ \d+/\d+ \(\d+%\) \S+ img/s ETA \d+:\d\d:\d\d$", line) for line in extract), extract


NAMED_PLOTS = ("train_loss", "train_L_C", "train_L_R", "train_L_Cp", "train_n_selected", "train_lr", "train_images_per_s", "val_knn_top1")
TINY_METRICS = {  # per cell of the tiny grid (retrieve.ks [1, 5], knn_ks [5]): the numbers and nothing else
    "probe.json": {"top1", "top5"},
    "retrieval.json": {"rank1", "rank5", "mAP", "knn.top1_k5"},
}


def leaves(d: dict, prefix: str = "") -> dict:
    """Flattened {dotted key: value} of a JSON object, as `dvc metrics show` and `dvc exp show` flatten it."""
    out = {}
    for k, v in d.items():
        out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_dvc_metrics_show_holds_only_numbers(project):
    files = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)[""]["data"]
    expected = {f"metrics/synthetic/{e}/seed0/{f}": keys for e in ("random_init", "mocov2_synth") for f, keys in TINY_METRICS.items()}
    assert {f: set(leaves(v["data"])) for f, v in files.items()} == expected
    values = [v for f in files.values() for v in leaves(f["data"]).values()]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), values
    table = run(["dvc", "metrics", "show"], project).stdout.splitlines()
    assert len(table) == 1 + len(expected), table  # a header, then one line per metrics file: its path and numbers
    for line in table[1:]:
        path, *cells = line.split()
        assert path in expected and all(c == "-" or float(c) >= 0 for c in cells), line


def test_dvc_exp_show_has_one_column_per_number(project):
    header = run(["dvc", "exp", "show", "--csv"], project).stdout.splitlines()[0].split(",")
    metric_columns = [c for c in header if ".json:" in c]
    expected = [
        f"metrics/synthetic/{e}/seed0/{f}:{k}" for e in ("random_init", "mocov2_synth") for f, keys in TINY_METRICS.items() for k in keys
    ]
    assert sorted(metric_columns) == sorted(expected), metric_columns  # 12 columns (the full records made 96)


def test_dvc_plots_show_draws_each_loss_term_and_the_report_figures(project):
    shown = json.loads(run(["dvc", "plots", "show", "--json", "-o", "dvc_plots"], project).stdout)["data"]
    for plot_id in NAMED_PLOTS:  # the tiny grid trains one run (mocov2_synth): its curve, each step once
        (plot,) = shown[plot_id]
        values = plot["content"]["data"]["values"]
        steps = [int(v["step"]) for v in values]
        assert steps and len(steps) == len(set(steps)) and {v["run"] for v in values} == {"synthetic/mocov2_synth/seed0"}, plot_id
    figures = {f"reports/figures/{f.name}" for f in (project / "reports/figures").glob("*.png")}
    assert figures and figures == {k for k, v in shown.items() if v[0]["type"] == "image"}


def test_second_repro_does_nothing(project):
    lock = (project / "dvc.lock").read_text()
    out = run(["dvc", "repro"], project).stdout
    assert ran_stages(out) == ALWAYS, out  # the raw manifest is listed again, finds the same tree...
    assert (project / "dvc.lock").read_text() == lock and stale(project) == set()  # ...and nothing after it reruns


def test_an_image_added_to_an_imagefolder_reruns_its_prepare(project, tmp_path):
    """Own images are a dependency: adding one makes the dataset's prepare stale (through its raw manifest), an
    unchanged tree does not, and the prepared cache then holds the new image."""
    tree = make_imagefolder_tree(tmp_path)

    def add_own(raw):
        raw["datasets"]["own"] = {"kind": "imagefolder", "root": str(tree.root), "image_size": 32, "crop_size": 32}
        raw["grid"]["datasets"].append("own")

    try:
        with edited_params(project, add_own):
            repro = ["dvc", "repro", "prepare@own"]
            assert ran_stages(run(repro, project).stdout) == {"raw_manifest@own", "prepare@own"}
            assert ran_stages(run(repro, project).stdout) == {"raw_manifest@own"}  # the same tree: prepare is up to date
            write_image(tree.root / "train/alpha/added.png", seed=5)
            assert ran_stages(run(repro, project).stdout) == {"raw_manifest@own", "prepare@own"}
            manifest = (project / "data/prepared/own/manifest.csv").read_text()
            assert ",train/alpha/added.png," in manifest and len(manifest.splitlines()) == len(tree.items) + 2
    finally:
        restore(project)
        shutil.rmtree(project / "data/prepared/own", ignore_errors=True)
        (project / "data/raw_manifest/own.tsv").unlink(missing_ok=True)


def queue_states(project) -> dict[str, str]:
    """Experiment name -> state (Queued, Running, Success, Failed) from `dvc queue status`."""
    rows = (line.split() for line in run(["dvc", "queue", "status"], project).stdout.splitlines())
    return {r[1]: r[-1] for r in rows if len(r) >= 4 and r[-1] in {"Queued", "Running", "Success", "Failed"}}


def test_queued_sweep_runs_outside_the_workspace(project):
    """The sweep of docs/pipeline.md: queued experiments run in copies under .dvc/tmp/exps (shared cache, no
    checkpoints/, tools from PATH), two at once (`dvc queue start -j 2`); `dvc exp show`, `metrics diff` and
    `plots diff` compare them."""
    restore(project)  # the committed baseline holds the current grid's results
    nu = yaml.safe_load((project / "params.yaml").read_text())["pretrain"]["nu"]
    other, third = [v for v in (1.0, 0.5, 0.25) if v != nu][:2]
    for value in (other, third):
        run(["dvc", "exp", "run", "-S", f"pretrain.nu={value}", "--queue"], project)
    # two workers, each its own copy of the project; they inherit the command's output, so it is not captured (a
    # captured pipe stays open while a worker lives, and waiting for it hung the test once)
    subprocess.run(
        ["dvc", "queue", "start", "-j", "2"],
        cwd=project,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )
    deadline, most_running = time.monotonic() + 600, 0
    try:
        while len(states := queue_states(project)) < 2 or {"Queued", "Running"} & set(states.values()):
            assert time.monotonic() < deadline, f"queue not done after 600 s: {states}"
            workspaces = [d for d in (project / ".dvc/tmp/exps").glob("tmp*") if d.is_dir()]  # one per running experiment
            most_running = max(most_running, len(workspaces))
            time.sleep(1)
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, check=False)  # no worker outlives the test
    failed = [n for n, s in states.items() if s != "Success"]
    assert not failed, "\n".join(run(["dvc", "queue", "logs", n], project, check=False).stdout[-3000:] for n in failed)
    assert most_running == 2, "the two experiments never ran at the same time (one workspace under .dvc/tmp/exps each)"

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    base = next(r for r in shown if r["rev"] != "workspace")
    exps = {rev["data"]["params"]["params.yaml"]["data"]["pretrain"]["nu"]: rev for e in base["experiments"] for rev in e["revs"]}
    assert set(exps) == {other, third}, exps.keys()
    assert (
        exps[other]["data"]["outs"]["models/synthetic/mocov2_synth/seed0"]["hash"]
        != exps[third]["data"]["outs"]["models/synthetic/mocov2_synth/seed0"]["hash"]
    )  # each worker trained its own ν

    def metrics(rev: dict, exp: str) -> dict:
        return {f: rev["data"]["metrics"][f"metrics/synthetic/{exp}/seed0/{f}"]["data"] for f in ("probe.json", "retrieval.json")}

    def records(rev: dict, exp: str) -> dict:  # hashes of the meta records: timings included, so a rerun changes them
        return {f: rev["data"]["outs"][f"metrics/synthetic/{exp}/seed0/{f}"]["hash"] for f in ("probe.meta.json", "retrieval.meta.json")}

    # the baseline's cells are not recomputed in the copy (identical untrained encoder: not re-evaluated)
    assert metrics(exps[other], "random_init") == metrics(base, "random_init")
    assert records(exps[other], "random_init") == records(base, "random_init")
    encoder = "models/synthetic/mocov2_synth/seed0"
    assert exps[other]["data"]["outs"][encoder]["hash"] != base["data"]["outs"][encoder]["hash"]  # retrained with the other ν
    changed = metrics(exps[other], "mocov2_synth")["probe.json"]

    name = exps[other]["name"]  # docs/pipeline.md's filtered view lists each experiment's ν and metrics
    table = run(
        ["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", r"Experiment|pretrain\.nu|.*mocov2_synth.*:(top1|mAP)$"], project
    ).stdout
    header, *rows = table.splitlines()
    assert set(header.split(",")) == {
        "Experiment",
        "pretrain.nu",
        "metrics/synthetic/mocov2_synth/seed0/probe.json:top1",
        "metrics/synthetic/mocov2_synth/seed0/retrieval.json:mAP",
    }, header
    assert any(r.startswith(f"{name},") and f"{changed['top1']}" in r for r in rows), table
    diff = run(["dvc", "metrics", "diff", "HEAD", name], project).stdout
    # the retrained row's metrics, not the untouched one's (which file moves is chance: the tiny test
    # set's top-1 is coarse, retrieval's mAP is not)
    assert "metrics/synthetic/mocov2_synth/seed0/" in diff and "random_init" not in diff, diff
    run(["dvc", "plots", "diff", "HEAD", name, "-o", "plots_diff"], project)
    assert name in (project / "plots_diff/index.html").read_text()
    diffed = json.loads(run(["dvc", "plots", "diff", "HEAD", name, "--json", "-o", "plots_diff"], project).stdout)["data"]
    for plot_id in ("train_L_C", "train_L_Cp", "val_knn_top1"):  # the experiment's curve over the baseline's
        assert {v["rev"] for v in diffed[plot_id][0]["content"]["data"]["values"]} == {"HEAD", name}, plot_id
    figures = [k for k, v in diffed.items() if v[0]["type"] == "image"]
    assert figures and all({r for im in diffed[k] for r in im["revisions"]} == {"HEAD", name} for k in figures)


def test_param_change_reruns_only_its_readers(project):
    try:
        with edited_params(project, lambda raw: raw["probe"].update(max_iter=60)):
            out = run(["dvc", "repro"], project).stdout
            assert ran_stages(out) == ALWAYS | {"validate", "probe@synthetic-random_init-0", "probe@synthetic-mocov2_synth-0", "report"}, (
                out
            )
    finally:
        restore(project)


def test_an_indexer_edit_reaches_only_validate_and_prepare(project):
    """The stages after prepare read the prepared cache (data/prepared.py), never the indexers of raw layouts
    (data/sources): an edit there reruns validate and prepare, and nothing below them unless the cache's
    bytes change. Before the reader left cache.py, DVC called every pretrain, extract, probe and the report stale."""
    indexer = project / "src/finesyn/data/sources/cub200.py"
    try:
        indexer.write_text(indexer.read_text() + "\n# an edit to how CUB is indexed\n")
        assert stale(project) == {"validate", "prepare@synthetic"}
    finally:
        restore(project)


def snakemake_plan(project) -> set[str]:
    out = run(["snakemake", "-n", "--cores", "1"], project).stdout
    return {line[5:-1] for line in out.splitlines() if line.startswith("rule ") and line.endswith(":")} - {"all"}


@pytest.fixture(scope="module")
def nu_changed(project) -> dict:
    """One `pretrain.nu` edit after a DVC run, seen by both tools: what Snakemake plans, then what `dvc repro`
    reruns (or restores from its run-cache), and the baseline's encoder before and after."""
    restore(project)
    shutil.rmtree(project / PARAMS_STAMPS, ignore_errors=True)  # Snakemake's first look at DVC's outputs
    run(["snakemake", "--touch", "--cores", "1"], project)  # outputs dated as DVC left them, in step
    seen = {"plan_before": snakemake_plan(project)}
    encoder = project / "models/synthetic/random_init/seed0/encoder.pt"
    seen["baseline_encoder_before"] = encoder.read_bytes()
    try:
        with edited_params(project, lambda raw: raw["pretrain"].update(nu=0.65)):  # a value no other test ran (DVC's run-cache)
            seen["planned"] = snakemake_plan(project)
            out = run(["dvc", "repro"], project).stdout
            seen["ran"] = ran_stages(out)
            seen["cached"] = {line.split("'")[1] for line in out.splitlines() if line.startswith("Stage '") and "is cached" in line}
            seen["baseline_encoder_after"] = encoder.read_bytes()
    finally:
        restore(project)
    return seen


def test_module_param_does_not_retrain_baselines(nu_changed):
    """pretrain.nu changes the synth run only; the baseline's stage reruns but reuses its checkpoint."""
    assert "pretrain@synthetic-mocov2_synth-0" in nu_changed["ran"]
    assert "extract@synthetic-random_init-0" not in nu_changed["ran"]  # identical encoder: nothing downstream reruns
    assert nu_changed["baseline_encoder_after"] == nu_changed["baseline_encoder_before"]


def test_typo_in_unread_section_fails_dvc_repro(project):
    with edited_params(project, lambda raw: raw["report"].update(refrence_numbers=None)):
        r = run(["dvc", "repro"], project, check=False)
        assert r.returncode != 0
        assert "report.refrence_numbers: unknown key (did you mean 'reference_numbers'?)" in r.stdout + r.stderr
        r = run(["snakemake", "-n", "--cores", "1"], project, check=False)
        assert r.returncode != 0 and "report.refrence_numbers" in r.stdout + r.stderr


def test_snakemake_agrees_with_dvc_after_touch(project):
    """DVC judges inputs by content, Snakemake by modification time: after an edit DVC finds changes
    nothing (params.yaml saved again, or edited and restored), Snakemake plans reruns. `snakemake --touch` (the
    README's remedy) makes it agree with DVC without running anything, and DVC stays up to date."""
    restore(project)  # up to date again (a failed repro above deleted validate's output)
    (project / "params.yaml").touch()  # a saved edit undone: new time, same content
    assert stale(project) == set()
    assert "Nothing to be done" not in run(["snakemake", "-n", "--cores", "1"], project).stdout
    run(["snakemake", "--touch", "--cores", "1"], project)
    out = run(["snakemake", "-n", "--cores", "1"], project).stdout
    assert "Nothing to be done" in out, out[-3000:]
    assert stale(project) == set()


def test_snakemake_plans_what_dvc_reruns_after_a_param_change_made_after_a_dvc_run(nu_changed):
    """A DVC run leaves Snakemake no metadata of its jobs, so Snakemake's own params trigger cannot fire: after
    `pretrain.nu` changed it planned only validate and report, and would have rebuilt the report over the old
    encoders. Each stage's params file (graph.params_stamp, dated by dvc.lock) closes that gap."""
    assert nu_changed["plan_before"] == set()
    reran = {re.sub(r"\W", "_", s.replace("@", "__")) for s in (nu_changed["ran"] | nu_changed["cached"]) - ALWAYS}
    planned = nu_changed["planned"]
    assert "pretrain__synthetic_mocov2_synth_0" in reran and reran <= planned  # nothing DVC reruns is missed
    # beyond it only the jobs below the baseline's pretrain: DVC reran it too (pretrain.nu is in its section) but
    # found the same encoder bytes by hash; Snakemake judges by time
    assert planned - reran == {f"{s}__synthetic_random_init_0" for s in ("extract", "probe", "retrieve")}


@pytest.mark.parametrize(
    ("edited", "downstream"),
    [("src/finesyn/report/html.py", set()), ("src/finesyn/pairs/perturb.py", {"extract", "probe", "retrieve", "report"})],
)
def test_snakemake_plans_what_dvc_reruns_after_a_code_change_made_after_a_dvc_run(project, edited, downstream):
    """A code edit after a DVC run: Snakemake plans every stage DVC calls stale, and beyond them only the jobs
    below a stage whose outputs DVC would find unchanged by hash (Snakemake judges by time)."""
    restore(project)
    run(["snakemake", "--touch", "--cores", "1"], project)  # in step with DVC's outputs
    path = project / edited
    try:
        path.write_text(path.read_text() + "\n# an edit after a DVC run\n")
        dvc_stale = {re.sub(r"\W", "_", s.replace("@", "__")) for s in stale(project)}
        planned = snakemake_plan(project)
    finally:
        restore(project)
        run(["snakemake", "--touch", "--cores", "1"], project)
    assert dvc_stale and dvc_stale <= planned, (dvc_stale, planned)
    assert {job.split("__")[0] for job in planned - dvc_stale} <= downstream, planned - dvc_stale


def test_snakemake_refuses_config_it_would_ignore(project):
    """The graph reads params.yaml only: `--config` must fail loudly, not run the unchanged graph."""
    r = run(["snakemake", "-n", "--cores", "1", "--config", "grid_seeds=[1]"], project, check=False)
    assert r.returncode != 0 and "--config/--configfile (grid_seeds) is not read" in r.stdout + r.stderr


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
    """One rule per DVC stage with its command, inputs and outputs; a stage DVC runs on every repro (the raw
    manifest) Snakemake runs while it reads the graph, so the rules after it see its file as a plain input."""
    stages = dvc_stages(project)
    assert {st.name for st in stages if st.always_changed} == ALWAYS
    jobs = snakemake_jobs(project)
    stages = [st for st in stages if not st.always_changed]
    assert set(jobs) - {"all"} == {st.rule_name for st in stages}
    for st in stages:
        job = jobs[st.rule_name]
        assert job["output"] == set(st.outs), st.name
        assert job["input"] == set(snakemake_inputs(st, stages, project)) | {str(PARAMS_STAMPS / f"{st.rule_name}.json")}, st.name
        assert job["shell"] == f"{st.cmd.strip()} 2>&1 | tee logs/snakemake/{st.rule_name}.log", st.name
        assert job["output"] not in [jobs[o.rule_name]["output"] for o in stages if o is not st]
    # the input mapping keeps every DVC dependency: each is an input, inside one, or made of outputs that are
    for st in stages:
        inputs = snakemake_inputs(st, stages, project)
        for dep in st.deps:
            assert any(dep == i or dep.startswith(i + "/") or i.startswith(dep + "/") for i in inputs), (st.name, dep)

# Snakemake executes the stage graph of dvc.yaml + params.yaml: it does not restate it.
# One rule per resolved DVC stage (same command, inputs, outputs); Snakemake adds parallel and
# cluster execution, resources and conda envs. After a Snakemake run, `dvc commit` records
# the results in dvc.lock.
from finesyn.config import load_params
from finesyn.graph import dvc_stages, is_directory_output, params_stamp, snakemake_inputs

PARAMS = load_params("params.yaml")  # a typo anywhere fails here, naming the key
if config:  # Snakemake's --config / --configfile: this graph never reads them, so refuse rather than ignore
    raise WorkflowError(
        f"snakemake --config/--configfile ({', '.join(sorted(config))}) is not read: every setting is in params.yaml, "
        "the one source of truth DVC reads too. Edit params.yaml (or use `dvc exp run -S key=value`) instead."
    )
STAGES = dvc_stages(workflow.basedir)
THREADS = {"prepare": 2, "pretrain": 2, "extract": 2, "probe": 2, "retrieve": 2}

# `snakemake --report report.html` (after a run): the report stage's own tables and figures, so the
# Snakemake report shows what `dvc repro` shows. Keys are DVC outputs of the report stage.
report: "snakemake-report/workflow.rst"
REPORT_OUTPUTS = {
    "reports/index.html": dict(caption="snakemake-report/index.rst", category="1. Pipeline report"),
    "reports/results.csv": dict(caption="snakemake-report/results.rst", category="2. Tables"),
    "reports/results.md": dict(caption="snakemake-report/results.rst", category="2. Tables"),
    "reports/results.json": dict(caption="snakemake-report/results.rst", category="2. Tables"),
    "reports/figures": dict(
        patterns=["{figure}.png"], caption="snakemake-report/figure.rst", category="3. Figures", labels={"figure": "{figure}"}
    ),
}
_unknown = set(REPORT_OUTPUTS) - {o for st in STAGES for o in st.outs}
if _unknown:  # a renamed output in dvc.yaml would otherwise drop out of the report silently
    raise WorkflowError(f"REPORT_OUTPUTS in the Snakefile names paths no DVC stage writes: {sorted(_unknown)}")


def snakemake_output(path):
    """A DVC output as a Snakemake output: directory() by the dvc.yaml convention, report() if shown."""
    out = directory(path) if is_directory_output(path) else path
    return report(out, **REPORT_OUTPUTS[path]) if path in REPORT_OUTPUTS else out


rule all:
    input:
        [o for st in STAGES for o in st.outs],
    default_target: True


for st in STAGES:
    if st.always_changed:  # DVC runs it on every repro; here it runs now, while the graph is read, and rewrites
        if workflow.is_main_process:  # its file only when what it lists changed: the rules after it judge that file by
            shell(st.cmd)  # its date. Not in a cluster job's own parse: every job would list the tree again, at once
        continue

    rule:
        name:
            st.rule_name
        input:
            # + a file of the stage's params: a change after a DVC run (no Snakemake metadata) still reruns it
            snakemake_inputs(st, STAGES, workflow.basedir) + [params_stamp(st, workflow.basedir)],
        output:
            [snakemake_output(o) for o in st.outs],
        params:
            # the command travels as a param: a `shell:` expression would be evaluated when the job
            # runs, after the loop has moved on to the last stage
            cmd=st.cmd,
            values=st.params_json,  # the stage's resolved params: a change reruns it (rerun-trigger "params")
        log:
            f"logs/snakemake/{st.rule_name}.log",
        threads: THREADS.get(st.group, 1)
        conda:
            "envs/finesyn-cpu.yaml"  # used with --sdm conda; the CUDA env: --conda-prefix / edit here
        shell:
            "{params.cmd} 2>&1 | tee {log}"

"""dvc.yaml's plots: one chart per loss term / monitor metric over fixed files that the report fills with every
run of whatever grid ran, drawn one line per run, rendered with no network; and the report's figures as image plots."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from pipeline_helpers import run

from finesyn.config import load_params
from finesyn.report.curve_files import curve_name, write_curve_files

ROOT = Path(__file__).resolve().parents[1]
TERMS = ["train/loss", "train/L_C", "train/L_R", "train/L_Cp", "train/n_selected", "train/lr", "train/images_per_s", "val/knn20_top1"]


def named_plots(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, dict]:
    plots = yaml.safe_load(dvc_yaml.read_text())["plots"]
    return {k: v for p in plots if isinstance(p, dict) for k, v in p.items()}


def test_each_named_plot_draws_one_gathered_term_by_run():
    for plot_id, spec in named_plots().items():
        (path, field), *more = spec["y"].items()
        assert not more and field == "value" and spec["x"] == "step" and spec["template"] == "runs", plot_id
        m = re.fullmatch(r"reports/curves/(train|val)/(\w+)\.tsv", path)
        assert m and plot_id == f"{m[1]}_{m[2]}", (plot_id, path)  # the id says which file it draws
    assert {f"reports/curves/{curve_name(*t.split('/'))}.tsv" for t in TERMS} == {p for s in named_plots().values() for p in s["y"]}


def test_every_committed_curve_file_is_plotted_and_holds_the_default_grids_runs():
    listed = subprocess.run(["git", "ls-files", "reports/curves"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert set(listed) == {p for s in named_plots().values() for p in s["y"]}
    params = load_params(ROOT / "params.yaml")
    trained = {
        f"{d}/{e}/seed{s}" for d in params.grid.datasets for e in params.grid.experiments if e != "random_init" for s in params.grid.seeds
    }
    runs = {line.split("\t")[0] for line in (ROOT / "reports/curves/train/L_C.tsv").read_text().splitlines()[1:]}
    assert runs == trained


def test_the_report_figures_are_image_plots():
    assert "reports/figures" in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]  # a directory plot id: each PNG


def _fake_runs(models: Path, cells: list[tuple[str, str]]) -> None:
    for d, e in cells:
        live = models / d / e / "seed0" / "live/plots/metrics"
        for term in TERMS:
            part, name = term.split("/")
            (live / part).mkdir(parents=True, exist_ok=True)
            (live / part / f"{name}.tsv").write_text(f"timestamp\tstep\t{name}\n1\t0\t{len(d)}.5\n2\t5\t{len(e)}.25\n")


def test_dvc_plots_show_overlays_a_two_dataset_grid_offline(tmp_path):
    """Own data beside the default: `dvc plots show` draws both datasets' runs in every chart, and its page
    loads no script from the network (vega is inlined)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    run(["git", "init", "-q"], proj)
    run(["dvc", "init", "-q"], proj)
    shutil.copytree(ROOT / ".dvc/plots", proj / ".dvc/plots")
    shutil.copy(ROOT / ".dvc/config", proj / ".dvc/config")
    plots = [p for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"] if isinstance(p, dict)]
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    base = load_params(ROOT / "params.yaml")
    cells = [("synthetic", "mocov2"), ("synthetic", "mocov2_synth"), ("own", "mocov2"), ("own", "mocov2_synth")]
    grid = base.grid.model_copy(update={"datasets": ["synthetic", "own"], "experiments": ["mocov2", "mocov2_synth"], "seeds": [0]})
    _fake_runs(tmp_path / "models", cells)
    write_curve_files(base.model_copy(update={"grid": grid}), tmp_path / "models", proj / "reports/curves")

    shown = json.loads(run(["dvc", "plots", "show", "--json"], proj).stdout)["data"]
    for plot_id in named_plots():
        (plot,) = shown[plot_id]
        runs = {v["run"] for v in plot["content"]["data"]["values"]}
        assert runs == {f"{d}/{e}/seed0" for d, e in cells}, plot_id
        assert plot["content"]["encoding"]["color"]["field"] == "run", plot_id
    run(["dvc", "plots", "show", "-o", "page"], proj)
    page = (proj / "page/index.html").read_text()
    assert "own/mocov2_synth/seed0" in page and "vegaEmbed(" in page
    assert not re.search(r"<script[^>]+src=", page), "the page loads a script from elsewhere: it would not render offline"

"""dvc.yaml's plots: one named chart per loss term / monitor metric overlaying the default grid's runs,
and the report's figures as image plots. DVC plot definitions have no loops, so these tests keep the
listed files in step with params.yaml's grid and with the curves the committed run mirrored."""

import subprocess
from pathlib import Path

import yaml

from finesyn.config import load_params
from finesyn.paths import RunPaths

ROOT = Path(__file__).resolve().parents[1]


def named_plots() -> dict[str, dict]:
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return {k: v for p in plots if isinstance(p, dict) for k, v in p.items() if isinstance(v.get("y"), dict)}


def test_each_named_plot_overlays_one_term_of_the_default_grids_runs():
    params = load_params(ROOT / "params.yaml")
    grid_runs = {
        RunPaths(d, e, s).model_dir(Path("reports/curves"))
        for d in params.grid.datasets
        for e in params.grid.experiments
        for s in params.grid.seeds
    }
    for plot_id, spec in named_plots().items():
        assert spec["x"] == "step", plot_id
        terms = set()
        for f in map(Path, spec["y"]):
            run = next((r for r in grid_runs if r in f.parents), None)
            assert run is not None, f"{plot_id}: {f} is not a run of params.yaml's grid"
            assert spec["y"][str(f)] == f.stem, f"{plot_id}: {f} is drawn by its own column"
            terms.add(f.relative_to(run).as_posix())
        assert len(terms) == 1, f"{plot_id} mixes {terms}"  # one term (train/<term> or val/<metric>) of several runs
        term = terms.pop()
        assert plot_id == ("" if "/" in term else "train_") + term.removesuffix(".tsv").replace("/", "_"), plot_id


def test_every_committed_curve_is_in_one_named_plot_and_every_plotted_file_is_committed():
    listed = subprocess.run(["git", "ls-files", "reports/curves"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    committed = {f for f in listed if f.endswith(".tsv")}
    plotted = [f for spec in named_plots().values() for f in spec["y"]]
    assert len(plotted) == len(set(plotted))
    assert set(plotted) == committed


def test_the_report_figures_are_image_plots():
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    assert "reports/figures" in plots  # a directory plot id: each PNG in it is an image plot

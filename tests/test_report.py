"""The report stage: tables (mean ± std, ablations, reference numbers), figures, the HTML, Grad-CAM."""

import base64
import csv
import importlib.util
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finesyn.config import ParamsError, parse_params
from finesyn.data.prepare import prepare_dataset
from finesyn.eval import gradcam
from finesyn.models.backbone import Backbone
from finesyn.report import budget_check, build_report, collect, compare_reference, fig_alpha, load_reference_numbers, plots

LOG = logging.getLogger("test_report")
D = "toy"
EXPERIMENTS = ["random_init", "mocov2", "mocov2_synth", "mocov2_a05_nu0", "mocov2_varonly"]
SEEDS = [0, 1]
N_CLASSES, TRAIN_PER, TEST_PER, SIZE = 3, 4, 4, 32
N_TEST = N_CLASSES * TEST_PER
# linear top-1 per (experiment, seed); hand-checked means/stds below
TOP1 = {
    "random_init": (30.0, 34.0),
    "mocov2": (60.0, 64.0),
    "mocov2_synth": (70.0, 71.0),
    "mocov2_a05_nu0": (61.0, 61.0),
    "mocov2_varonly": (66.0, 68.0),
}
EXPECTED = {  # mean ± sample std (n-1) over the two seeds, by hand
    "random_init": "32.00 ± 2.83",  # (30+34)/2; sqrt((2²+2²)/1) = 2.828
    "mocov2": "62.00 ± 2.83",
    "mocov2_synth": "70.50 ± 0.71",  # sqrt((0.5²+0.5²)/1) = 0.707
    "mocov2_a05_nu0": "61.00 ± 0.00",
    "mocov2_varonly": "67.00 ± 1.41",
}


def raw_params(**report) -> dict:
    return {
        "grid": {"datasets": [D], "experiments": EXPERIMENTS, "seeds": SEEDS},
        "datasets": {D: {"kind": "synthetic", "image_size": SIZE, "crop_size": SIZE, "num_classes": N_CLASSES}},
        "experiments": {
            "random_init": {"method": "none"},
            "mocov2": {"method": "mocov2"},
            "mocov2_synth": {"method": "mocov2", "synth": True},
            "mocov2_a05_nu0": {"method": "mocov2", "synth": True, "overrides": {"alpha": 0.5, "nu": 0.0}},
            "mocov2_varonly": {"method": "mocov2", "synth": True, "overrides": {"synth": {"criteria": ["variance"]}}},
        },
        "retrieve": {"knn_ks": [5]},
        "report": report,
    }


def save_encoder(path, seed: int) -> Backbone:
    """A real (random) ResNet-18 in the format train.encoder_artifact writes."""
    torch.manual_seed(seed)
    bb = Backbone("resnet18")
    state = {
        "arch": "resnet18",
        "stem": "standard",
        "feature_dim": bb.dim,
        "method": "mocov2",
        "backbone": bb.state_dict(),
        "projector": None,
        "projector_spec": None,
        "run_id": f"run{seed}",
        "steps": 0,
    }
    path.mkdir(parents=True, exist_ok=True)
    torch.save(state, path / "encoder.pt")
    return bb


def write_tsv(path, name, steps, values):
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.tsv").write_text("step\t" + name + "\n" + "".join(f"{s}\t{v}\n" for s, v in zip(steps, values)))


PAIR_N, PAIR_SIZE = 3, 16


def pair_views():
    """(view, g(h), g(h̃)) batches, normalised like the training views: g(h̃) differs from g(h) in one 4x4 patch per row."""
    torch.manual_seed(0)
    view, gh = torch.randn(PAIR_N, 3, PAIR_SIZE, PAIR_SIZE), torch.randn(PAIR_N, 3, PAIR_SIZE, PAIR_SIZE) * 0.3
    gh_tilde = gh.clone()
    for i in range(PAIR_N):
        gh_tilde[i, :, 4 * i : 4 * i + 4, 4:8] += 0.5 * (i + 1)  # row i changes in its own patch, by more in later rows
    return view, gh, gh_tilde


def pair_grid_png() -> bytes:
    from finesyn.pairs.pair_grid import pair_grid_png as draw

    return draw(pair_views())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    cfg = parse_params(raw_params()).datasets[D].model_copy(update={"train_per_class": TRAIN_PER, "test_per_class": TEST_PER})
    prepare_dataset(D, cfg, root / "data" / D)  # the generator: Fig. 3 knows where each bird and marking is
    for e in EXPERIMENTS:
        for k, seed in enumerate(SEEDS):
            m = root / "metrics" / D / e / f"seed{seed}"
            m.mkdir(parents=True)
            common = {"seed": seed, "params_hash": f"hash-{e}-{seed}", "encoder_run_id": f"run-{e}-{seed}", "code_version": "abc123"}
            (m / "probe.json").write_text(json.dumps({"top1": TOP1[e][k], "top5": 90.0 + k}))
            (m / "probe.meta.json").write_text(json.dumps({"protocol": "lbfgs", "n_test": N_TEST, **common}))
            (m / "retrieval.json").write_text(json.dumps({"rank1": 50.0 + k, "rank5": 80.0, "mAP": 30.0 + 2 * k, "knn": {"top1_k5": 40.0}}))
            protocol = {"retrieval": "test_loo", "knn": "cosine"}  # as the retrieve stage records it: a dict
            (m / "retrieval.meta.json").write_text(json.dumps({"protocol": protocol, **common}))
            if e != "random_init":
                live = root / "models" / D / e / f"seed{seed}" / "live" / "plots" / "metrics" / "train"
                terms = ("L_R", "L_Cp", "n_selected") if "synth" in e or "varonly" in e else ("L_R",) if "nu0" in e else ()
                for term in ("loss", "L_C") + terms:
                    write_tsv(live, term, [5, 10, 15], [3.0 - k * 0.1, 2.5, 2.0])
                write_tsv(live, "lr", [5, 10, 15], [0.1, 0.05, 0.0])
    for e in ("mocov2_synth", "mocov2_varonly"):  # ν = 0 runs make no pairs
        (root / "models" / D / e / "seed0" / "pairs.png").write_bytes(pair_grid_png())
    recon = {"psnr_db": 17.25, "mean_image_psnr_db": 12.5, "gain_db": 4.75, "images": 40, "view": "eval view"}
    (root / "models" / D / "mocov2_synth" / "seed0" / "train.json").write_text(json.dumps({"reconstruction": recon}))
    save_encoder(root / "models" / D / "mocov2" / "seed0", 1)
    save_encoder(root / "models" / D / "mocov2_synth" / "seed0", 2)
    # features of the Fig. 2 encoder: dim 3 separates the classes (large variance), dim 0 is constant
    test_labels = np.repeat(np.arange(N_CLASSES), TEST_PER)
    feats = rng.normal(0, 0.1, (len(test_labels), 16)).astype(np.float32)
    feats[:, 3] += 5.0 * test_labels
    feats[:, 0] = 1.0
    f = root / "features" / D / "mocov2"
    f.mkdir(parents=True)
    np.savez(
        f / "seed0.npz",
        train_features=feats,
        train_labels=test_labels,
        train_ids=np.arange(len(test_labels)).astype(str),
        test_features=feats,
        test_labels=test_labels,
        test_ids=np.arange(len(test_labels)).astype(str),
        num_classes=np.array(N_CLASSES),
        encoder_run_id=np.array("run1"),
        feature=np.array("backbone"),
    )
    (root / "reference.csv").write_text(
        "dataset,experiment,metric,value,source\ntoy,mocov2,top1,61.5,paper Tab. 1\ntoy,mocov2_synth,mAP,29,\ntoy,simclr,Rank-1,10,\n"
    )
    return root


@pytest.fixture(scope="module")
def report(tree):
    params = parse_params(raw_params(reference_numbers=str(tree / "reference.csv")))
    out = tree / "reports"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "fig2_variance_gone.png").write_bytes(b"stale")  # a dataset no longer in the grid
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("finesyn.report.figures.GRADCAM_VIEWS", 2)  # speed; the stage uses 8
        res = build_report(
            params, tree / "metrics", out, LOG, features_root=tree / "features", models_root=tree / "models", data_root=tree / "data"
        )
    return params, out, res


def test_tables_mean_std_over_seeds(report):
    _, out, _ = report
    md = (out / "results.md").read_text()
    for e, text in EXPECTED.items():
        assert re.search(
            rf"^\| {e} \| {re.escape(text)} \| 90\.50 ± 0\.71 \| 50\.50 ± 0\.71 \| 80\.00 ± 0\.00 \| 31\.00 ± 1\.41 \| 40\.00 ± 0\.00 \| [^|]+ \|$",
            md,
            re.M,
        ), (e, md)
    csv_text = (out / "results.csv").read_text()
    assert f"toy,mocov2,2,{N_TEST},62.0000" in csv_text and ",2.8284," in csv_text
    row = next(r for r in csv.DictReader(io.StringIO(csv_text)) if r["experiment"] == "mocov2")
    assert float(row["linear top-1 binomial se"]) == pytest.approx(100 * math.sqrt(0.62 * 0.38 / N_TEST), abs=1e-4)
    assert "mAP binomial se" not in row  # a mean of APs is not a share of test images


def test_results_json_holds_mean_std_and_values_per_dataset_and_experiment(report):
    _, out, _ = report
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {D} and set(res[D]) == set(EXPERIMENTS)
    top1 = res[D]["mocov2"]["linear top-1"]
    assert top1["values"] == [60.0, 64.0] and top1["mean"] == 62.0 and top1["std"] == pytest.approx(2.828427, abs=1e-6)
    assert res[D]["mocov2"]["kNN-5"] == {"mean": 40.0, "std": 0.0, "values": [40.0, 40.0]} and res[D]["mocov2"]["seeds"] == SEEDS
    assert set(res[D]["mocov2"]) == {"seeds", "linear top-1", "linear top-5", "Rank-1", "Rank-5", "mAP", "kNN-5"}


def test_provenance_comes_from_the_meta_records(report):
    _, _, res = report
    row = next(r for r in res["rows"] if r["experiment"] == "mocov2")
    src = row["sources"][1]
    assert src["encoder_run_id"] == "run-mocov2-1" and src["protocol"] == {
        "probe.json": "lbfgs",
        "retrieval.json": {"retrieval": "test_loo", "knn": "cosine"},
    }
    assert [Path(f).name for f in src["files"]] == ["probe.json", "probe.meta.json", "retrieval.json", "retrieval.meta.json"]
    assert row["n_test"] == TEST_PER * N_CLASSES


def test_a_missing_meta_record_is_named(tree, tmp_path):
    import shutil

    metrics = tmp_path / "metrics"
    shutil.copytree(tree / "metrics", metrics)
    (metrics / D / "mocov2" / "seed1" / "retrieval.meta.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"mocov2/seed1/retrieval\.meta\.json"):
        collect(parse_params(raw_params()), metrics)


def test_every_trained_row_shows_its_gain_over_the_row_it_started_from(report):
    _, out, _ = report
    md = (out / "results.md").read_text()
    assert re.search(r"^\| mocov2 \| .* \| \+30\.00 \(vs random_init\) \|$", md, re.M), md  # 62 - 32
    assert re.search(r"^\| mocov2_synth \| .* \| \+38\.50 \(vs random_init\) \|$", md, re.M), md  # 70.5 - 32
    assert re.search(r"^\| random_init \| .* \| – \|$", md, re.M), md


def test_module_effect_is_a_paired_mean_with_a_student_t_interval(report):
    _, out, _ = report
    md = (out / "results.md").read_text()
    # per-seed differences 70-60 = 10 and 71-64 = 7: mean 8.5, sd 2.1213, t(0.975, 1) = 12.7062 -> half-width 19.06
    assert "| toy | mocov2_synth − mocov2 | linear top-1 | 2 | +8.50 ± 19.06 [-10.56, +27.56] |" in md, md
    assert "| toy | mocov2_synth − mocov2 | kNN-5 | 2 | +0.00 ± 0.00 [+0.00, +0.00] |" in md, md


def test_paired_difference_of_one_seed_has_no_interval():
    from finesyn.report import paired_difference

    assert paired_difference([3.0], [1.0]) == {"n": 1, "mean": 2.0, "half_width": None}
    assert paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])["half_width"] == pytest.approx(4.302653 * 1.0 / 3**0.5, rel=1e-6)


def test_ablation_section_lists_overrides_and_delta(report):
    _, out, _ = report
    md = (out / "results.md").read_text()
    assert "## Ablations" in md
    # mocov2_a05_nu0 vs its baseline mocov2_synth: 61.00 − 70.50
    assert re.search(r"^\| mocov2_a05_nu0 \| mocov2_synth \| alpha=0\.5, nu=0\.0 \| 61\.00 ± 0\.00 .* \| -9\.50 \|$", md, re.M), md
    assert re.search(r"^\| mocov2_varonly \| mocov2_synth \| synth\.criteria=\[variance\] \| 67\.00 ± 1\.41 .* \| -3\.50 \|$", md, re.M), md


def test_reference_numbers_side_by_side_with_difference(report):
    params, out, res = report
    by = {(c["experiment"], c["metric"]): c for c in res["refs"]}
    assert by[("mocov2", "linear top-1")]["diff"] == pytest.approx(62.0 - 61.5)
    assert by[("mocov2", "linear top-1")]["extra"] == {"source": "paper Tab. 1"}
    assert by[("mocov2_synth", "mAP")]["diff"] == pytest.approx(31.0 - 29.0)
    assert by[("simclr", "Rank-1")]["diff"] is None  # not in the grid: shown, no difference
    md = (out / "results.md").read_text()
    assert "| toy | mocov2 | linear top-1 | 61.50 | 62.00 ± 2.83 | +0.50 |" in md
    assert "| toy | mocov2_synth | mAP | 29.00 | 31.00 ± 1.41 | +2.00 |" in md
    html = (out / "index.html").read_text()
    assert "+0.50" in html and "+2.00" in html and "paper Tab. 1" in html


@pytest.mark.parametrize(
    "content, message",
    [
        ("dataset,experiment,value\ntoy,mocov2,1\n", "header must contain the columns"),
        ("", "header must contain the columns"),
        ("dataset,experiment,metric,value\ntoy,mocov2,top1,sixty\n", "line 2: value 'sixty' is not a number"),
        ("dataset,experiment,metric,value\ntoy,mocov2,accuracy,60\n", "line 2: unknown metric 'accuracy'"),
        ("dataset,experiment,metric,value\ntoy,,top1,60\n", "line 2: empty 'experiment'"),
        ("dataset,experiment,metric,value\ntoy,mocov2,top1,60\ntoy,mocov2,linear top-1,61\n", "line 3: duplicate entry"),
        ("dataset,experiment,metric,value\ntoy,mocov2,top1,60,extra\n", "line 2: more fields"),
        ("dataset,experiment,metric,value\n", "no rows"),
    ],
)
def test_malformed_reference_file_names_it(tmp_path, content, message):
    path = tmp_path / "my_refs.csv"
    path.write_text(content)
    params = parse_params(raw_params(reference_numbers=str(path)))
    with pytest.raises(ParamsError) as e:
        load_reference_numbers(path, params)
    assert str(path) in str(e.value) and "report.reference_numbers" in str(e.value) and message in str(e.value)


def test_missing_reference_file_names_it(tmp_path, tree):
    path = tmp_path / "nope.csv"
    params = parse_params(raw_params(reference_numbers=str(path)))
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        build_report(params, tree / "metrics", tmp_path / "out", LOG)


def test_the_stage_writes_the_tables_and_make_repro_prints_them_once(tmp_path, tree, capsys):
    """`make repro` = dvc repro (this stage) + `python -m finesyn.report` (print_table): one printed table."""
    from finesyn.report import print_table

    params = parse_params(raw_params())
    build_report(params, tree / "metrics", tmp_path / "out", LOG)
    assert (tmp_path / "out" / "results.md").is_file() and capsys.readouterr().out == ""
    print_table(params, collect(params, tree / "metrics"))
    out = capsys.readouterr().out
    assert sum(line.lstrip("│ ").startswith("random_init ") for line in out.splitlines()) == 1  # one table row
    assert f"({len(SEEDS)} seeds, paired)" in out  # the module's effect under it
    one = raw_params()
    one["grid"]["seeds"] = SEEDS[:1]
    print_table(parse_params(one), collect(parse_params(one), tree / "metrics"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("mocov2_synth − mocov2")]
    assert lines and all(line.endswith("(1 seed: no interval)") and line.count("seed") == 1 for line in lines)  # said once


def test_the_html_shows_the_module_effect_as_results_md_does(report, tree):
    """index.html is what a researcher opens: the paired module − baseline table is there, in the nav,
    with the same cells as results.md."""
    import html

    from finesyn.report.rows import module_effect_cells, module_effects

    params, out, _ = report
    md, page = ((out / f).read_text() for f in ("results.md", "index.html"))
    effects = module_effects(params, collect(params, tree / "metrics"))
    assert effects and 'href="#module-effect"' in page
    for e in effects:
        cells = module_effect_cells(e)
        assert "| " + " | ".join(cells) + " |" in md
        assert "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" in page


def test_stage_cli_reports_a_malformed_reference_file(tmp_path, tree, monkeypatch, capsys):
    import yaml

    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,experiment,metric,value\ntoy,mocov2,top1,n/a\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params(reference_numbers=str(bad))))
    stage_file = plots.__file__.replace("src/finesyn/report/plots.py", "stages/report.py")
    monkeypatch.syspath_prepend(str(Path(stage_file).parent))  # as when run as a script: stages/ first on sys.path
    spec = importlib.util.spec_from_file_location("report_stage", stage_file)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    with pytest.raises(SystemExit) as e:
        stage.main(
            metrics=tree / "metrics",
            out=tmp_path / "out",
            features=None,
            models=None,
            data=None,
            resolved=None,
            params=tmp_path / "params.yaml",
        )
    assert e.value.code == 2
    err = capsys.readouterr()
    assert str(bad) in (err.err + err.out).replace("\n", "")


def test_figures_written_and_embedded(report):
    _, out, res = report
    figs = {f["id"]: f for f in res["figures"]}
    expected = {
        "fig2_variance_toy",
        "fig3_gradcam_toy",
        "fig4_pairs_toy_mocov2_synth",
        "fig4_pairs_toy_mocov2_varonly",
        "fig5_alpha",
        "curves_toy",
    }
    assert set(figs) == expected
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == expected
    html = (out / "index.html").read_text()
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", p
        assert len(data) > 5000 or p.stem.startswith("fig4"), p  # the fake pairs.png is tiny; drawn figures are not
        assert base64.b64encode(data).decode() in html, p  # embedded, not linked
    assert "<img" in html and 'src="figures/' not in html
    for f in figs.values():
        assert f["caption"].split("(")[0] in html
    assert "layer2" in figs["fig3_gradcam_toy"]["caption"]  # 32 px: layer4 is 1x1, the 4x4 block is used
    assert "mocov2_a05_nu0" in figs["fig5_alpha"]["caption"]
    # Fig. 4's yardstick: g(h)'s PSNR against the mean image's, from train.json; a run without it says so
    assert "17.25 dB" in figs["fig4_pairs_toy_mocov2_synth"]["caption"] and "+4.75 dB" in figs["fig4_pairs_toy_mocov2_synth"]["caption"]
    assert "No reconstruction PSNR" in figs["fig4_pairs_toy_mocov2_varonly"]["caption"]
    md = (out / "results.md").read_text()
    assert (
        "## Fig. 4" in md
        and "toy/mocov2_synth (seed 0): Reconstruction on 40 test images" in md
        and "renders more than the mean image" in md
    )


def test_html_has_every_row_and_its_provenance(report):
    params, out, res = report
    html = (out / "index.html").read_text()
    for row in res["rows"]:
        assert f">{row['experiment']}</a></td>" in html
        assert EXPECTED[row["experiment"]] in html
        for s in row["sources"]:
            for f in s["files"]:
                assert f in html  # the path is shown and linked
            assert f"hash-{row['experiment']}-{s['seed']}" in html
    assert html.count("<tr") >= len(res["rows"]) * (1 + len(SEEDS))
    assert "alpha=0.5, nu=0.0" in html and "synth.criteria=[variance]" in html


def test_stale_figures_are_removed(report):
    _, out, _ = report
    assert not (out / "figures" / "fig2_variance_gone.png").exists()


def test_curves_gathered_per_term_for_dvc_plots(tree, report):
    """One TSV per logged term holding every run (run, step, value), the values as dvclive wrote them."""
    import csv

    _, out, _ = report
    originals = sorted((tree / "models").rglob("live/plots/metrics/*/*.tsv"))
    gathered = {p.relative_to(out / "curves").as_posix() for p in (out / "curves").rglob("*.tsv")}
    assert gathered == {f"{p.parent.name}/{p.name}" for p in originals} and "train/L_Cp.tsv" in gathered
    rows = list(csv.DictReader((out / "curves/train/L_C.tsv").open(), delimiter="\t"))
    for src in (p for p in originals if p.name == "L_C.tsv"):
        run = src.relative_to(tree / "models").parts[:3]
        mine = [(r["step"], r["value"]) for r in rows if r["run"] == "/".join(run)]
        assert mine == [(r["step"], r["L_C"]) for r in csv.DictReader(src.open(), delimiter="\t")] and mine, run


def test_curve_files_keep_only_the_grids_runs_and_terms(tmp_path):
    """A run that left the grid leaves the files, a term no run logs any more loses its file, and the monitor's
    k leaves the name (dvc.yaml names val/knn_top1.tsv whatever pretrain.monitor_k is)."""
    from finesyn.config import load_params
    from finesyn.report.curve_files import write_curve_files

    default = load_params(Path(__file__).resolve().parents[1] / "params.yaml")

    def grid(datasets):
        return default.model_copy(
            update={"grid": default.grid.model_copy(update={"datasets": datasets, "experiments": ["mocov2"], "seeds": [0]})}
        )

    for d in ("a", "b"):
        live = tmp_path / "models" / d / "mocov2" / "seed0" / "live/plots/metrics"
        (live / "train").mkdir(parents=True)
        (live / "val").mkdir()
        (live / "train/L_C.tsv").write_text("timestamp\tstep\tL_C\n1\t0\t2.5\n2\t5\t2.25\n")
        (live / "val/knn10_top1.tsv").write_text("timestamp\tstep\tknn10_top1\n1\t0\t11.0\n")
    dest = tmp_path / "curves"
    (dest / "a/mocov2/seed0").mkdir(parents=True)
    (dest / "a/mocov2/seed0/L_C.tsv").write_text("a file of the per-run layout before\n")
    (dest / "train").mkdir()
    (dest / "train/L_R.tsv").write_text("run\tstep\tvalue\n")
    write_curve_files(grid(["a", "b"]), tmp_path / "models", dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["train", "train/L_C.tsv", "val", "val/knn_top1.tsv"]
    assert (
        dest / "train/L_C.tsv"
    ).read_text() == "run\tstep\tvalue\na/mocov2/seed0\t0\t2.5\na/mocov2/seed0\t5\t2.25\nb/mocov2/seed0\t0\t2.5\nb/mocov2/seed0\t5\t2.25\n"
    write_curve_files(grid(["b"]), tmp_path / "models", dest)
    assert "a/mocov2" not in (dest / "train/L_C.tsv").read_text() + (dest / "val/knn_top1.tsv").read_text()


def test_fig5_hint_when_no_alpha_sweep(tree):
    raw = raw_params()
    raw["grid"]["experiments"] = ["random_init", "mocov2", "mocov2_synth"]
    params = parse_params(raw)
    rows = collect(params, tree / "metrics")

    (fig,) = fig_alpha(params, rows, tree / "unused", LOG)  # params.yaml defines one: pasting a definition would duplicate it
    assert fig["path"] is None and "add their names to grid.experiments" in fig["caption"] and "nu: 0.0" not in fig["caption"]
    assert "experiments: [random_init, mocov2, mocov2_synth, mocov2_a05_nu0]" in fig["caption"]
    del raw["experiments"]["mocov2_a05_nu0"]
    (fig,) = fig_alpha(parse_params(raw), rows, tree / "unused", LOG)  # none defined: how to define some
    assert "nu: 0.0" in fig["caption"] and "must not contain '.'" in fig["caption"]


def test_compare_reference_pure():
    rows = [{"dataset": "a", "experiment": "x", "values": {"mAP": [10.0, 14.0]}}]
    (c,) = compare_reference(rows, [{"dataset": "a", "experiment": "x", "metric": "mAP", "value": 11.0, "extra": {}, "line": 2}])
    assert c["diff"] == pytest.approx(1.0) and c["ours_text"] == "12.00 ± 2.83"


def test_variance_stats_picks_dimensions_and_pair():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    x = np.zeros((len(labels), 4))
    x[:, 1] = labels * 10.0  # max variance, separates
    x[:, 2] = np.linspace(0, 0.1, len(labels))  # smallest non-zero variance
    x[:, 3] = np.linspace(0, 1, len(labels))
    s = plots.variance_stats(x, labels)
    assert (s["j_min"], s["j_max"], s["n_constant"], s["pair"]) == (2, 1, 1, (1, 2))
    assert s["fisher"]["v_max"] > 100 * s["fisher"]["v_min"]


def test_fisher_ratios_print_their_significant_digits():
    """The default's ratios are ~0.001: two decimals printed both as 0.00, saying nothing."""
    assert [plots.fmt_ratio(v) for v in (0.001234, 0.5, 1234.5)] == ["0.00123", "0.5", "1.23e+03"]


def test_gradcam_shape_nonnegative_and_encoder_dependent():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    views = torch.stack([x.flip(-1), x.roll(3, dims=-1)])
    a, b = Backbone("resnet18"), Backbone("resnet18")
    layer = gradcam.cam_layer(a, 32)
    assert layer == "layer2"
    cam_a = gradcam.ssl_gradcam(a, x, views, layer)
    cam_b = gradcam.ssl_gradcam(b, x, views, layer)
    assert cam_a.shape == (3, 32, 32) and cam_b.shape == (3, 32, 32)
    assert (cam_a >= 0).all() and (cam_b >= 0).all() and cam_a.amax() > 0
    assert not torch.allclose(cam_a, cam_b)
    assert all(p.grad is None for p in a.parameters())  # the encoder is not touched
    # at paper resolution the last conv block (layer4, 7x7 at 224 px) is used
    assert gradcam.cam_layer(a, 224) == "layer4"
    cam4 = gradcam.ssl_gradcam(a, torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), "layer4")
    assert cam4.shape == (1, 64, 64) and (cam4 >= 0).all()


class _TwoChannelEncoder(torch.nn.Module):
    """Its last conv block's maps are the input's first two channels; h is their average."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Module()
        self.net.avgpool = torch.nn.AdaptiveAvgPool2d(1)

    def forward_maps(self, x):
        return x[:, :2]


def test_class_gradcam_lies_on_the_evidence_for_the_class_it_explains():
    """Channel 0 is lit top left, channel 1 bottom right; the probe reads class 0 from channel 0 and
    class 1 from channel 1: each class's map must lie wholly on its own patch."""
    x = torch.zeros(2, 3, 8, 8)
    x[:, 0, :4, :4] = 1.0
    x[:, 1, 4:, 4:] = 1.0
    top_left = np.zeros((2, 8, 8))
    top_left[:, :4, :4] = 1.0
    weight, bias = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), torch.zeros(2)
    enc = _TwoChannelEncoder()
    for label, share in ((0, 1.0), (1, 0.0)):
        cam = gradcam.class_gradcam(enc, x, weight, bias, torch.full((2,), label), "layer4")
        assert cam.amax() > 0
        np.testing.assert_allclose(gradcam.mass_on(cam.numpy(), top_left), share, atol=1e-6)


def test_class_evidence_table_spreads_over_seeds_and_pairs_the_module_with_its_baseline():
    """Several seeds: mean ± std over seeds and the paired shift with its t interval; one seed: ± the SE over images."""
    from finesyn.report import attention

    raw = raw_params()
    raw["grid"]["experiments"], raw["grid"]["seeds"] = ["mocov2", "mocov2_synth"], [0, 1, 2]
    params = parse_params(raw)
    run = lambda bird, marking: {"bird": bird, "bird_se": 0.5, "marking": marking, "marking_se": 0.1}  # noqa: E731
    m = {
        "dataset": "synthetic",
        "n": 1000,
        "area": {"bird": 18.0, "marking": 1.0},
        "runs": {
            "mocov2": {0: run(20, 2.0), 1: run(22, 2.2), 2: run(24, 2.4)},
            "mocov2_synth": {0: run(21, 2.5), 1: run(23, 2.5), 2: run(25, 3.1)},
        },
    }
    rows, shifts = attention.table_rows(params, m)
    assert rows[0] == ["mocov2", "0,1,2", "22.00 ± 2.00", "2.20 ± 0.20"]
    # marking shifts +0.5, +0.3, +0.7: mean +0.5, half-width t(0.975, 2) * 0.2 / sqrt(3) = 4.303 * 0.1155 = 0.497
    assert shifts == ["mocov2_synth − mocov2: on the bird +1.00 [+1.00, +1.00] (3 seeds), on the marking +0.50 [+0.00, +1.00] (3 seeds)"]
    cells = attention.add_to_summary({"synthetic": {"mocov2": {"seeds": [0, 1, 2]}}}, [m])["synthetic"]["mocov2"]
    marking = cells["class-logit Grad-CAM on marking (%)"]
    assert cells["seeds"] == [0, 1, 2] and marking["values"] == [2.0, 2.2, 2.4]
    assert marking["mean"] == pytest.approx(2.2, abs=1e-12) and marking["std"] == pytest.approx(0.2, abs=1e-12)
    one = {**m, "runs": {e: {0: r[0]} for e, r in m["runs"].items()}}
    rows, shifts = attention.table_rows(params, one)
    assert rows[1] == ["mocov2_synth", "0", "21.00 ± 0.50", "2.50 ± 0.10"] and "+0.50 (1 seed: no interval)" in shifts[0]


def test_grid_without_baselines_or_sweep_explains_missing_figures(tree, tmp_path):
    raw = raw_params()
    raw["grid"]["experiments"] = ["random_init", "mocov2_synth"]  # the pipeline tests' tiny grid
    out = tmp_path / "reports"
    res = build_report(
        parse_params(raw), tree / "metrics", out, LOG, features_root=tree / "features", models_root=tree / "models", data_root=tree / "data"
    )
    drawn = {f["id"] for f in res["figures"] if f["path"] is not None}
    assert drawn == {"fig4_pairs_toy_mocov2_synth", "curves_toy"}
    html = (out / "index.html").read_text()
    assert html.count("Not drawn:") == 3  # Fig. 2 (no SSL baseline), Fig. 3 (no baseline/+module pair), Fig. 5 (no ν = 0 runs)
    assert "experiments: [random_init, mocov2_synth, mocov2_a05_nu0]" in html and "Ablations" not in html  # the defined one, named
    assert (out / "figures").is_dir() and (out / "curves").is_dir()


@pytest.mark.parametrize("arch,pool", [("resnet18", "avg"), ("convnet", "max"), ("resnet_small", "max")])
def test_gradcam_layers_pool_to_the_encoder_feature(arch, pool):
    """The CAM's loss sees exactly f(x): maps at any block, run through the rest of the trunk and pooled
    by the encoder's own pool (the default's max pool included)."""
    b = Backbone(arch, pool=pool).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for layer in gradcam.LAYERS:
            assert torch.allclose(gradcam._pool_from(b, gradcam._maps_at(b, x, layer), layer), b(x), atol=1e-5), layer


# ----------------------------------------------------------------------------- budget check (reference rows)
def _budget_params(with_supervised: bool = True):
    raw = raw_params()
    raw["experiments"]["supervised"] = {"method": "supervised"}
    if with_supervised:
        raw["grid"]["experiments"] = ["random_init", "supervised", "mocov2"]
    else:
        raw["grid"]["experiments"] = ["random_init", "mocov2"]
    return parse_params(raw)


def _rows(**top1):
    return [
        {"dataset": D, "experiment": e, "values": {"linear top-1": v}, "n_test": 1000, "seeds": list(range(len(v))), "sources": []}
        for e, v in top1.items()
    ]


def test_budget_check_says_the_budget_learns_when_supervised_is_clearly_ahead():
    msg = budget_check(_budget_params(), _rows(random_init=[13.0], supervised=[29.0, 31.0], mocov2=[11.0]), D)
    # margin = 2·100·sqrt(.30·.70/1000 + .13·.87/1000) = 3.5949... points; means over seeds: 30 vs 13
    assert "`supervised` 30.00 vs `random_init` 13.00" in msg and "+17.00 points" in msg and "3.59 " in msg.replace(",", " ")
    assert "learns on this data" in msg and "say nothing" not in msg


def test_budget_check_flags_a_budget_where_even_labels_do_not_help():
    msg = budget_check(_budget_params(), _rows(random_init=[13.4], supervised=[14.0], mocov2=[10.2]), D)
    # 0.6 points < 2·100·sqrt(.14·.86/1000 + .134·.866/1000) = 3.075
    assert "3.08" in msg and "does not learn on this data" in msg and "SSL rows say nothing about SSL" in msg
    msg = budget_check(_budget_params(), _rows(random_init=[13.4], supervised=[10.2], mocov2=[10.2]), D)
    assert "does not learn on this data" in msg


def test_budget_check_tells_a_ceiling_from_a_budget_that_does_not_train():
    """Own digits at 64 px: the untrained encoder scored 95.67, supervised 98.33 on 300 test images: no room for a
    clear lead; 'this budget does not train' would send the user to fix a recipe that works."""
    rows = _rows(random_init=[95.67], supervised=[98.33], mocov2=[97.33])
    for row in rows:
        row["n_test"] = 300
    msg = budget_check(_budget_params(), rows, D)
    assert "already scores 95.67, leaving 4.33 points, too little headroom" in msg and "does not learn" not in msg
    from finesyn.report.rows import headline

    assert "too little headroom" in headline(_budget_params(), rows, D)
    assert "headroom" not in budget_check(_budget_params(), _rows(random_init=[13.4], supervised=[14.0], mocov2=[10.2]), D)


def test_budget_check_needs_both_reference_rows():
    assert budget_check(_budget_params(False), _rows(random_init=[13.4], mocov2=[10.2]), D) is None


def test_a_grid_without_reference_rows_says_so_loudly():
    """A sweep that drops `supervised` used to lose the budget check without a word."""
    from finesyn.report.rows import missing_references

    msg = missing_references(_budget_params(False), _rows(random_init=[13.4], mocov2=[10.2]), D)
    assert msg.startswith("No budget check: the grid has no `supervised` row (method: supervised), so nothing here says")
    assert msg.endswith("Add the reference rows to grid.experiments.")
    assert missing_references(_budget_params(), _rows(random_init=[13.0], supervised=[30.0], mocov2=[11.0]), D) is None


def test_budget_check_is_printed_under_the_table():
    from finesyn.report import to_markdown

    md = to_markdown(_budget_params(), _rows(random_init=[13.4], supervised=[10.2], mocov2=[10.2]))
    table_end = md.index("| mocov2 |")
    assert md.index("Budget check:") > table_end


# ----------------------------------------------------------------------------- the report as a researcher reads it
def _page_text(html_text: str) -> str:
    """What a reader sees: the HTML without tags, scripts' data or entities."""
    import html as html_lib

    return html_lib.unescape(re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", html_text)))


def test_budget_check_is_a_box_coloured_by_its_verdict(tmp_path):
    from finesyn.report.html import to_html

    params = _budget_params()
    learns = to_html(params, _rows(random_init=[13.0], supervised=[60.0], mocov2=[11.0]), [], tmp_path)
    fails = to_html(params, _rows(random_init=[13.4], supervised=[14.0], mocov2=[10.2]), [], tmp_path)
    assert re.search(r'<div class="check ok" role="note"><strong>Budget check: training learns', learns)
    assert re.search(r'<div class="check warn" role="note"><strong>Budget check: even the labels do not help', fails)
    assert "check warn" not in learns and "check ok" not in fails
    assert ".check.warn{" in fails  # styled: a border and a background, not a plain paragraph


def test_no_python_reprs_in_the_page(report):
    _, out, _ = report
    text = _page_text((out / "index.html").read_text())
    for repr_start in ("['", "{'", "seeds [0, 1]", "(seeds [0"):
        assert repr_start not in text, repr_start
    assert "seeds 0, 1" in text and "datasets toy ×" in text
    assert "retrieval.json: retrieval: test_loo; knn: cosine" in text  # a dict protocol as prose


def test_one_seed_table_shows_binomial_standard_errors(tree, tmp_path):
    from finesyn.report.html import to_html
    from finesyn.report.text import to_markdown

    raw = raw_params()
    raw["grid"]["seeds"] = [0]
    params = parse_params(raw)
    rows = collect(params, tree / "metrics")
    md, page = to_markdown(params, rows), _page_text(to_html(params, rows, [], tmp_path))
    # mocov2 seed 0: top-1 60 % on N_TEST = 12 images: 100·sqrt(.6·.4/12) = 14.142; top-5 90 %: 8.660; mAP 30: no error
    line = next(x for x in md.splitlines() if x.startswith("| mocov2 |"))
    assert line.startswith("| mocov2 | 60.00 ± 14.14 | 90.00 ± 8.66 | 50.00 ± 14.43 | 80.00 ± 11.55 | 30.00 | 40.00 ± 14.14 |")
    assert "60.00 ± 14.14" in page and "binomial standard error" in page
    assert "mean ± sample std" not in page
    # several seeds: mean ± sample std, never a binomial error
    both = to_markdown(parse_params(raw_params()), collect(parse_params(raw_params()), tree / "metrics"))
    assert "| mocov2 | 62.00 ± 2.83 |" in both and "binomial" not in both


def test_gradcam_mass_on_bird_and_marking_is_printed_per_row(report):
    _, out, res = report
    fig3 = next(f for f in res["figures"] if f["id"] == "fig3_gradcam_toy")
    table = fig3["caption"][fig3["caption"].index('<table class="shares">') :]
    rows = re.findall(r'<tr><td class="l">([^<]+)</td>((?:<td>[^<]*</td>)+)</tr>', table)
    assert len(rows) == 6  # one per image of the figure
    header = re.findall(r"<th>([^<]+)(?:<br>([^<]+))?</th>", table)
    assert [h[1] for h in header[3:]] == ["on bird", "on marking"] * 2 and header[3][0] == "mocov2 (layer2)"
    for label, cells in rows:
        assert re.fullmatch(r"synthetic-test-\d{6} \(\w+@\w+\)", label)
        obj_area, mark_area, *shares = (float(v) for v in re.findall(r"<td>([^<]*)</td>", cells))
        assert 0 < mark_area < obj_area < 100
        for on_obj, on_mark in zip(shares[::2], shares[1::2]):
            assert 0 <= on_mark <= on_obj <= 100  # the marking lies on the bird
    assert fig3["caption"] in (out / "index.html").read_text()


def test_gradcam_mass_share_is_the_masked_fraction():
    cams = np.zeros((2, 4, 4))
    cams[0, 0, :2] = [3.0, 1.0]
    masks = np.zeros((2, 4, 4))
    masks[0, 0, 0], masks[0, 0, 1] = 1.0, 0.5  # soft coverage counts in proportion
    share = gradcam.mass_on(cams, masks)
    assert share[0] == pytest.approx((3.0 + 0.5) / 4.0) and np.isnan(share[1])  # an all-zero map has no share
    with pytest.raises(ValueError, match="same shape"):
        gradcam.mass_on(cams, masks[:, :2])


def test_pair_grid_has_the_difference_column():
    view, gh, gh_tilde = pair_views()
    tiles = plots.grid_tiles(np.asarray(Image.open(io.BytesIO(pair_grid_png())).convert("RGB")))
    assert tiles.shape == (PAIR_N, 4, PAIR_SIZE, PAIR_SIZE, 3)
    diff = tiles[:, 3, :, :, 0].astype(int)
    for i in range(PAIR_N):
        inside = np.zeros((PAIR_SIZE, PAIR_SIZE), bool)
        inside[4 * i : 4 * i + 4, 4:8] = True
        assert (diff[i][~inside] == 0).all() and (diff[i][inside] > 0).all()  # bright exactly where the pair differs
    assert diff.max() == 255 and diff[-1].max() == 255  # scaled to the grid's largest difference (the last row's)
    assert (tiles[:, 3, ..., 0] == tiles[:, 3, ..., 2]).all()  # grey: the mean over RGB
    fig, _ = plots.pairs_figure(pair_grid_png(), "new")
    bar = fig.axes[-1]  # the difference column's scale bar: 0 to the largest channel-mean difference
    top = (np.abs(tiles[:, 1].astype(float) - tiles[:, 2].astype(float)).mean(-1) / 255).max()
    assert len(fig.axes) == 2 and bar.get_xlim() == pytest.approx((0, top)) and "white = this grid's largest" in bar.get_xlabel()


def test_pairs_figure_reads_old_three_column_grids_too():
    from torchvision.utils import make_grid, save_image

    view, gh, gh_tilde = (t.clamp(0, 1) for t in pair_views())
    buf = io.BytesIO()
    save_image(make_grid(torch.stack([view, gh, gh_tilde], 1).flatten(0, 1), nrow=3, padding=2, pad_value=1.0), buf, format="png")
    fig, diff = plots.pairs_figure(buf.getvalue(), "old")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == 3 and diff["rows"] == PAIR_N and diff["max"] > 0
    with pytest.raises(ValueError, match="square tiles"):
        plots.grid_tiles(np.full((20, 30, 3), 128, np.uint8))


def test_fig5_has_the_alpha_zero_baseline_chance_and_error_bars(report):
    params, _, res = report
    fig5 = next(f for f in res["figures"] if f["id"] == "fig5_alpha")
    assert "toy/mocov2," in fig5["caption"] and "α = 0" in fig5["caption"] and "chance" in fig5["caption"]
    from finesyn.report.figures import _alpha_panel
    from finesyn.report.rows import _row_index

    panel, _ = _alpha_panel(params, _row_index(res["rows"]), D)
    points = {name: (a, m, err) for a, m, err, name in panel["series"][0]["points"]}
    assert points["mocov2 (α = 0)"] == (0.0, 62.0, pytest.approx(2.828, abs=1e-3))  # the baseline, its std over 2 seeds
    assert points["mocov2_a05_nu0"] == (0.5, 61.0, 0.0)
    assert panel["chance"] == pytest.approx(100 / 3)


def test_curves_split_loss_kinds_and_draw_chance():
    from finesyn.report.figures import _by_loss_kind, _curve_chance

    raw = raw_params()
    raw["experiments"]["supervised"] = {"method": "supervised"}
    raw["grid"]["experiments"] = ["random_init", "supervised", "mocov2"]
    params = parse_params(raw)
    c = {"loss": 1, "L_C": 2, "val/knn20_top1": 3}
    assert _by_loss_kind(params, "supervised", c) == {"L_C — cross-entropy with the labels": 2, "val/knn20_top1": 3}
    assert _by_loss_kind(params, "mocov2", c) == {"L_C — InfoNCE": 2, "val/knn20_top1": 3}  # its total is its L_C
    assert _by_loss_kind(params, "mocov2_synth", c)["L = L_C + α·L_R + ν·L_Cp — InfoNCE"] == 1  # not titled "InfoNCE" alone
    assert plots.curve_y_label("L = L_C + α·L_R + ν·L_Cp — InfoNCE") == "InfoNCE (nats)"
    assert (
        plots.curve_y_label("val/knn20_top1").startswith("kNN top-1") and plots.curve_y_label("L_C — negative cosine") == "negative cosine"
    )
    chance = _curve_chance(params, D, {"L_C — cross-entropy with the labels", "L_C — InfoNCE", "val/knn20_top1"})
    assert chance["L_C — cross-entropy with the labels"][0] == pytest.approx(np.log(3))
    assert chance["val/knn20_top1"][0] == pytest.approx(100 / 3) and "L_C — InfoNCE" not in chance
    steps = np.arange(5.0)
    curves = {"supervised": {0: {"L_C — x": (steps, steps)}}, "mocov2": {0: {"L_C — x": (steps, steps)}}}
    fig = plots.curves_figure(curves, "t")
    lines = fig.axes[0].get_lines()
    assert lines[0].get_linestyle() != lines[1].get_linestyle() and lines[0].get_color() != lines[1].get_color()
    assert {t.get_text() for t in fig.axes[0].texts} == {"supervised", "mocov2"}  # labelled at their ends


def test_direct_labels_keep_apart_inside_the_panel():
    heights = plots.spread_labels([0.5, 0.98, 0.99, 1.0, 0.2], gap=0.07)
    assert heights[0] == 0.5 and heights[4] == 0.2  # labels with room stay at their line's end
    top = sorted(heights[1:4])
    assert top[-1] == pytest.approx(1.0) and all(b - a >= 0.07 - 1e-9 for a, b in zip(top, top[1:]))
    assert min(top) - 0.5 >= 0.07 - 1e-9


def test_retrieval_check_names_an_ssl_row_that_does_not_beat_its_start_on_retrieval():
    from finesyn.report.rows import retrieval_check

    def row(e, rank1, map_, knn):
        return {"dataset": D, "experiment": e, "values": {"linear top-1": [20.0], "Rank-1": [rank1], "mAP": [map_], "kNN-20": [knn]},
                "n_test": 1000, "seeds": [0], "sources": []}  # fmt: skip

    params = _budget_params()
    worse = [row("random_init", 12.66, 10.10, 10.41), row("supervised", 55.0, 31.0, 52.0), row("mocov2", 12.19, 10.15, 11.60)]
    msg = retrieval_check(params, worse, D)
    assert msg.startswith("Retrieval check: `mocov2` is not above `random_init` on Rank-1 12.19 vs 12.66")
    assert "mAP" not in msg.split(".")[0] and "supervised" not in msg  # mAP is above; the labelled row is a reference
    better = [row("random_init", 12.66, 10.10, 10.41), row("mocov2", 13.0, 10.2, 11.6)]
    assert retrieval_check(params, better, D) is None


def test_results_open_with_one_sentence_per_dataset_saying_what_the_rows_show(tree):
    from finesyn.report.rows import headline
    from finesyn.report.text import to_markdown

    params = parse_params(raw_params())
    rows = collect(params, tree / "metrics")
    line = headline(params, rows, D)
    # mocov2 62.00 vs random_init 32.00 (2 seeds); the module +8.50 with its t-interval over the 2 seeds
    assert line.startswith(f"On {D}: `mocov2` beats `random_init` by +30.00 linear top-1 (2 seeds)")
    assert "the module: `mocov2_synth` − `mocov2` +8.50 ± " in line and "(one seed)" not in line
    assert f"**{line}**" in to_markdown(params, rows).splitlines()[:4]

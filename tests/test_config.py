"""params.yaml errors name the key path, the bad value and what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finesyn.config import ParamsError, load_params, parse_params
from finesyn.data.layout import check_dataset_root


@pytest.fixture
def raw(repo_root):
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def error_of(raw) -> str:
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    return str(e.value)


def test_repository_params_are_valid(repo_root):
    p = load_params(repo_root / "params.yaml")
    assert "random_init" in p.grid.experiments  # the reference row every table needs
    for name in p.experiments:
        p.pretrain_for(name)


def test_negative_lr_names_key_and_value(raw):
    raw["pretrain"]["lr"] = -1
    msg = error_of(raw)
    assert "pretrain.lr" in msg and "-1" in msg and "greater than 0" in msg


def test_unknown_key_is_an_error_with_suggestion(raw):
    raw["pretrain"]["learning_rate"] = 0.1
    raw["pretrain"]["epochz"] = 3
    msg = error_of(raw)
    assert "pretrain.learning_rate: unknown key" in msg
    assert "pretrain.epochz: unknown key (did you mean 'epochs'?)" in msg


def test_unknown_top_level_and_nested_keys(raw):
    raw["prob"] = {}
    raw["pretrain"]["synth"]["critera"] = ["variance"]
    msg = error_of(raw)
    assert "prob: unknown key (did you mean 'probe'?)" in msg
    assert "pretrain.synth.critera: unknown key (did you mean 'criteria'?)" in msg


def test_typo_inside_a_named_dataset(raw):
    raw["datasets"]["synthetic"]["num_clases"] = 5
    assert "datasets.synthetic.num_clases: unknown key (did you mean 'num_classes'?)" in error_of(raw)


def test_bad_literal_lists_allowed_values(raw):
    raw["pretrain"]["synth"]["perturbation"] = "gauss"
    msg = error_of(raw)
    assert "pretrain.synth.perturbation" in msg and "gaussian_add" in msg and "'gauss'" in msg


def test_grid_names_must_exist(raw):
    raw["grid"]["experiments"] = ["mocov2", "mocv2_synth"]
    msg = error_of(raw)
    assert "grid.experiments: unknown name 'mocv2_synth' (did you mean 'mocov2_synth'?)" in msg


def test_experiment_overrides_are_validated_with_their_path(raw):
    raw["experiments"]["mocov2"]["overrides"] = {"nu": -2}
    assert "experiments.mocov2.overrides.nu" in error_of(raw)
    raw["experiments"]["mocov2"]["overrides"] = {"methods": {"mocov2": {"temprature": 0.1}}}
    assert "experiments.mocov2.overrides.methods.mocov2.temprature: unknown key (did you mean 'temperature'?)" in error_of(raw)


def test_overrides_merge_deeply(raw):
    raw["experiments"]["mocov2"]["overrides"] = {"nu": 2.0, "methods": {"mocov2": {"temperature": 0.1}}}
    p = parse_params(raw)
    eff = p.pretrain_for("mocov2")
    assert eff.nu == 2.0 and eff.methods.mocov2.temperature == 0.1
    assert eff.methods.mocov2.momentum == p.pretrain.methods.mocov2.momentum  # untouched siblings kept


def test_missing_dataset_root_names_the_key(raw, tmp_path):
    raw["datasets"]["cub200"]["root"] = str(tmp_path / "nowhere")
    raw["grid"]["datasets"] = ["cub200"]
    p = parse_params(raw)
    with pytest.raises(ParamsError, match=r"datasets\.cub200\.root: directory .*nowhere.* does not exist"):
        check_dataset_root(p, "cub200")


def _class_folder_tree(root: Path) -> Path:
    from PIL import Image

    for c in ("sparrow", "wren"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 90, 30)).save(root / c / f"{i}.png")
    return root


def test_validate_checks_the_layout_of_the_declared_kind_and_names_the_first_missing_file(raw, tmp_path, repo_root):
    """A class-folder tree declared cub200 fails `validate` (before prepare's hour), naming CUB's first missing
    annotation file and showing the tree it expected; the same tree declared imagefolder passes."""
    tree = _class_folder_tree(tmp_path / "birds")
    raw["datasets"]["mine"] = {"kind": "cub200", "root": str(tree)}
    raw["grid"]["datasets"] = ["mine"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, str(repo_root / "stages/validate.py"), "--params", str(params), "--out", str(tmp_path / "resolved.json")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and not (tmp_path / "resolved.json").exists()
    assert f"datasets.mine.root: '{tree}' is not a cub200 dataset: missing annotation file: {tree / 'classes.txt'}" in r.stderr
    assert "Expected layout:" in r.stderr and "image_class_labels.txt" in r.stderr
    raw["datasets"]["mine"] = {"kind": "imagefolder", "root": str(tree), "split_ratio": 0.5}
    assert check_dataset_root(parse_params(raw), "mine").kind == "imagefolder"


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"kind": "cub200", "root": "x", "split_ratio": 0.5}, "'split_ratio' is not read for kind 'cub200' (only for imagefolder)"),
        ({"kind": "imagefolder", "root": "x", "num_classes": 5}, "'num_classes' is not read for kind 'imagefolder' (only for synthetic)"),
        (
            {"kind": "synthetic", "root": "x"},
            "'root' is not read for kind 'synthetic' (only for cub200, stanford_cars, fgvc_aircraft, imagefolder)",
        ),
    ],
)
def test_a_key_of_another_kind_is_refused_not_ignored(raw, entry, message):
    raw["datasets"]["mine"] = entry
    assert f"datasets.mine: {message}: remove it, or set the kind it belongs to" in error_of(raw)


def test_real_dataset_requires_root(raw):
    raw["datasets"]["cub200"].pop("root")
    assert "datasets.cub200: 'root' is required for kind 'cub200'" in error_of(raw)


@pytest.mark.parametrize("reference", ["random_init", "supervised"])
def test_synth_needs_a_method(raw, reference):
    raw["experiments"][reference]["synth"] = True
    msg = error_of(raw)
    assert f"experiments.{reference}" in msg and "needs an SSL method" in msg


def test_stage_cli_fails_fast_naming_the_key(repo_root, tmp_path, raw):
    raw["pretrain"]["lr"] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [sys.executable, str(repo_root / "stages" / "validate.py"), "--params", str(bad), "--out", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert r.returncode == 2
    assert "pretrain.lr" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_invalid_yaml_names_the_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("grid: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(f)


def test_every_shipped_params_file_is_valid(repo_root):
    for path in [repo_root / "params.yaml", *sorted((repo_root / "params").glob("*.yaml"))]:
        load_params(path)


def test_experiment_methods_match_the_registry():
    import typing

    from finesyn.config import ExperimentConfig, MethodsConfig
    from finesyn.methods import METHODS

    allowed = set(typing.get_args(ExperimentConfig.model_fields["method"].annotation)) - {"none"}
    assert allowed == set(METHODS) == set(MethodsConfig.model_fields)


def test_names_must_be_usable_as_keys_and_paths(raw):
    raw["experiments"]["mocov2_alpha0.5"] = {"method": "mocov2"}
    assert "experiments.mocov2_alpha0.5: names may contain only letters, digits" in error_of(raw)


@pytest.mark.parametrize("axis", ["datasets", "experiments", "seeds"])
def test_empty_grid_axis_is_rejected(raw, axis):
    """An empty axis would run nothing and then overwrite the report with an empty table."""
    raw["grid"][axis] = []
    msg = error_of(raw)
    assert f"grid.{axis}" in msg and "at least 1" in msg


def test_repeated_grid_name_is_rejected(raw):
    raw["grid"]["seeds"] = [0, 1, 0]
    assert "grid.seeds" in error_of(raw) and "repeated 0" in error_of(raw)


def test_duplicate_yaml_key_names_it_and_its_lines(repo_root, tmp_path):
    text = (repo_root / "params.yaml").read_text()
    f = tmp_path / "params.yaml"
    f.write_text(text + "\npretrain:\n  lr: 0.5\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    first = 1 + text.splitlines().index("pretrain:" + text.split("\npretrain:", 1)[1].split("\n", 1)[0])
    assert "duplicate key 'pretrain'" in str(e.value) and f"first at line {first}" in str(e.value)
    assert str(f) in str(e.value)


def test_nested_duplicate_yaml_key_is_rejected(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("grid:\n  seeds: [0]\n  seeds: [1]\n")
    with pytest.raises(ParamsError, match="duplicate key 'seeds'"):
        load_params(f)


def test_batch_larger_than_the_generated_train_split_is_rejected_before_any_work(raw):
    ds = raw["datasets"]["synthetic"]
    ds["num_classes"], ds["train_per_class"] = 2, 20  # 2 x (20 - 2 held out by the monitor) = 36 images
    raw["pretrain"]["batch_size"] = 37
    raw["pretrain"]["monitor_val_fraction"] = 0.1
    msg = error_of(raw)
    assert "pretrain.batch_size: 37 exceeds the 36 images" in msg and "synthetic/" in msg
    raw["pretrain"]["batch_size"] = 36
    parse_params(raw)  # exactly one batch per epoch is fine


def test_batch_override_is_named_when_it_is_the_one_too_large(raw):
    raw["experiments"]["mocov2"]["overrides"] = {"batch_size": 4000}
    assert "experiments.mocov2.overrides.batch_size: 4000 exceeds" in error_of(raw)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("probe.l2_grid", [], "at least 1 item"),
        ("probe.l2_grid", [float("nan")], "finite number"),
        ("probe.l2_grid", [-1e-3], "greater than or equal to 0"),
        ("retrieve.ks", [0, 5], "greater than 0"),
        ("retrieve.knn_ks", [], "at least 1 item"),
        ("pretrain.augment.crop_ratio", [-1.0, 2.0], "0 < low <= high"),
        ("pretrain.augment.color_jitter", [-0.4, 0.4, 0.4, 0.1], "brightness, contrast, saturation >= 0"),
        ("pretrain.augment.color_jitter", [0.4, 0.4, 0.4, 0.7], "0 <= hue <= 0.5"),
        ("datasets.synthetic.object_scale", [0.3, -0.2], "0 < low <= high"),
        ("pretrain.lr", float("inf"), "finite number"),
    ],
)
def test_values_that_used_to_validate_and_fail_inside_a_stage_are_refused_naming_the_key(raw, path, value, expected):
    *parents, key = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[key] = value
    msg = error_of(raw)
    assert path in msg and expected in msg


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"pickle"])
def test_validate_refuses_an_init_file_that_is_not_a_state_dict(repo_root, tmp_path, raw, content):
    import torch

    init = tmp_path / "init.pth"
    if content == b"pickle":
        torch.save([1, 2, 3], init)  # loads, but is no state_dict
    else:
        init.write_bytes(content)
    raw["pretrain"]["init"] = str(init)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = tmp_path / "r.json"
    r = subprocess.run(
        [sys.executable, str(repo_root / "stages" / "validate.py"), "--params", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"pretrain.init: {init}" in " ".join(r.stderr.split()) and not out.exists()


def test_the_paper_path_carries_its_reference_rows_and_published_numbers(repo_root):
    """Without the init-only and supervised rows, the run that reproduces the paper had no "Δ vs start" and
    no budget check; published numbers ship with their source, beside the rows, never as rows."""
    from finesyn.report.references import load_reference_numbers
    from finesyn.report.rows import start_row_of

    p = load_params(repo_root / "params" / "paper.yaml")
    assert {"init_only", "supervised"} <= set(p.grid.experiments) and "random_init" not in p.experiments
    assert p.pretrain.init == "imagenet" and start_row_of(p, "mocov2") == "init_only"
    refs = load_reference_numbers(repo_root / p.report.reference_numbers, p)
    assert all("github.com/GANPerf/LCR/issues/" in r["extra"]["source"] for r in refs)
    assert {(r["experiment"], r["value"]) for r in refs} >= {("init_only", 68.17), ("mocov2", 68.30)}

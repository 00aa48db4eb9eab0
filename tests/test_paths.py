"""RunPaths is the layout dvc.yaml's resolved stages (and so the Snakefile's rules) use."""

from pathlib import Path

import pytest

from finesyn.artifacts import rebuild_command
from finesyn.graph import dvc_stages
from finesyn.paths import RunPaths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages():
    return [s for s in dvc_stages(ROOT) if "@" in s.name and s.group in ("pretrain", "extract", "probe", "retrieve")]


def _cell(stage) -> RunPaths:
    dataset, experiment, seed = stage.name.split("@")[1].rsplit("-", 2)
    return RunPaths(dataset, experiment, int(seed))


def test_every_grid_stage_reads_and_writes_exactly_the_runpaths_of_its_cell(stages):
    assert {s.group for s in stages} == {"pretrain", "extract", "probe", "retrieve"}
    for s in stages:
        run = _cell(s)
        expected = {
            "pretrain": {"--out": run.model_dir(), "--checkpoints": run.checkpoints()},
            "extract": {"--model": run.model_dir(), "--out": run.features()},
            "probe": {"--features": run.features(), "--model": run.model_dir(), "--out": run.probe()},
            "retrieve": {"--features": run.features(), "--model": run.model_dir(), "--out": run.retrieval()},
        }[s.group]
        words = s.cmd.split()
        for flag, path in expected.items():
            assert Path(words[words.index(flag) + 1]) == path, (s.name, flag)
        if s.group in ("probe", "retrieve"):  # the metrics file (numbers) and the meta record the stage writes next to it
            metrics = expected["--out"]
            assert {Path(o) for o in s.outs} == {metrics, RunPaths.meta_of(metrics)}, s.name


def test_a_metrics_file_and_its_meta_record_are_siblings():
    run = RunPaths("cub200", "mocov2", 1)
    assert run.probe() == Path("metrics/cub200/mocov2/seed1/probe.json")
    assert RunPaths.meta_of(run.probe()) == Path("metrics/cub200/mocov2/seed1/probe.meta.json")
    assert RunPaths.meta_of(run.retrieval(Path("/r/m"))) == Path("/r/m/cub200/mocov2/seed1/retrieval.meta.json")


def test_a_path_is_parsed_back_to_its_cell_and_its_rebuild_command():
    run = RunPaths("cub200", "mocov2_synth", 2)
    assert RunPaths.of(run.features()) == ("features", run)
    assert RunPaths.of(Path("/abs/project") / run.model_dir() / "encoder.pt") == ("models", run)
    assert RunPaths.of("elsewhere/encoder.pt") is None
    assert rebuild_command(run.model_dir() / "encoder.pt") == "rebuild it with `dvc repro -f -s pretrain@cub200-mocov2_synth-2`"

"""Logs that read in a file (issue 19): off a terminal every line carries an ISO timestamp and is
never wrapped, every long loop reports done/total with its rate and ETA, a repeated warning is
logged once; in a terminal rich draws them."""

import logging
import re
import warnings

import numpy as np
import pytest
from rich.logging import RichHandler
from tiny_models import TinyBackbone

from finesyn import cli
from finesyn.cli import ProgressLines, StepLines, stage_logging
from finesyn.data.synthetic import GeneratorSettings, generate_synthetic
from finesyn.eval.features import extract_features
from finesyn.eval.retrieval import retrieval_metrics

ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR) [\w.]+: ")


class Clock:
    """A clock the test moves by hand (rates and ETAs exactly)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    logging.captureWarnings(False)


def test_off_a_terminal_each_line_has_an_iso_timestamp_and_is_never_wrapped(tmp_path, capsys):
    long_path = "/data/" + "/".join(["retrieval_features_of_a_long_run"] * 9) + "/retrieval.json"
    assert len(long_path) > 300
    log = stage_logging(tmp_path / "train.log")
    log.info("wrote %s", long_path)
    log.warning("short")
    for text in (capsys.readouterr().err, (tmp_path / "train.log").read_text()):
        lines = text.splitlines()
        assert len(lines) == 2, text
        assert all(ISO_LINE.match(line) for line in lines), lines
        assert lines[0].endswith(f"INFO finesyn: wrote {long_path}")


def test_a_terminal_gets_rich_and_a_file_a_plain_handler(tmp_path, monkeypatch):
    stage_logging(None)
    (screen,) = logging.getLogger().handlers
    assert type(screen) is logging.StreamHandler and isinstance(screen.formatter, cli.IsoFormatter)
    monkeypatch.setattr(cli, "on_terminal", lambda: True)
    stage_logging(tmp_path / "x.log")
    screen, file = logging.getLogger().handlers
    assert isinstance(screen, RichHandler) and isinstance(file.formatter, cli.IsoFormatter)


def test_a_repeated_warning_is_logged_once_per_run(capsys):
    log = stage_logging(None)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # what a library resetting the filters does: Python would repeat it
        for _ in range(3):
            warnings.warn("queue larger than the data", UserWarning, stacklevel=1)
            log.warning("checkpoint x is unreadable")
    log.warning("another warning")
    log.info("info lines are never dropped")
    log.info("info lines are never dropped")
    err = capsys.readouterr().err
    assert err.count("queue larger than the data") == 1 and err.count("checkpoint x is unreadable") == 1, err
    assert err.count("another warning") == 1 and err.count("info lines are never dropped") == 2


def test_pretrain_step_line_has_the_total_the_epoch_the_rate_and_an_eta(caplog):
    clock, bar = Clock(), []
    steps = StepLines(logging.getLogger("finesyn"), epochs=3, bar=lambda *a: bar.append(a), clock=clock)
    steps.progress(0, 93)
    clock.t += 10.0
    rec = {"step": 35, "epoch": 1, "lr": 0.03, "loss": 4.5, "L_C": 4.1234, "L_Cp": 0.4, "n_selected": 12, "images_per_s": 812.34}
    with caplog.at_level(logging.INFO):
        steps.on_log(rec)
        steps.on_log({"step": 35, "val/knn20_top1": 41.5})
    # 35 steps in 10 s: the 58 left take 16.6 s
    assert caplog.messages == [
        "step 35/93 (epoch 2/3) lr 0.03 L_C=4.1234 L_Cp=0.4000 n_selected=12 812.3 img/s ETA 0:00:17",
        "step 35/93 val/knn20_top1=41.50",
    ]
    steps.progress(35, 93)  # the terminal's bar shows the last logged loss and img/s
    assert bar == [(0, 93, ""), (35, 93, "loss 4.5000 812 img/s")]


def test_a_resumed_run_s_eta_counts_only_its_own_steps(caplog):
    clock = Clock()
    steps = StepLines(logging.getLogger("finesyn"), epochs=2, clock=clock)
    steps.progress(50, 100)  # resumed at step 50
    clock.t += 5.0
    with caplog.at_level(logging.INFO):
        steps.on_log({"step": 60, "epoch": 1, "lr": 0.1, "loss": 1.0, "images_per_s": 100.0})
    assert caplog.messages[0].endswith("100.0 img/s ETA 0:00:20")  # 2 steps/s, 40 left


def test_progress_lines_have_done_total_rate_and_eta_every_interval_and_at_the_end(caplog):
    clock = Clock()
    lines = ProgressLines("prepare synthetic", "img", every_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO):
        lines.update(0, 100)  # no rate yet: no line
        for t, done in ((1, 10), (2, 20), (12, 50), (13, 100)):
            clock.t = 1000.0 + t
            lines.update(done, 100)
    assert caplog.messages == [
        "prepare synthetic 10/100 (10%) 10.0 img/s ETA 0:00:09",
        "prepare synthetic 50/100 (50%) 4.2 img/s ETA 0:00:12",
        "prepare synthetic 100/100 (100%) 7.7 img/s ETA 0:00:00",
    ]


def test_progress_bar_off_a_terminal_writes_lines_not_a_bar(capsys):
    stage_logging(None)
    with cli.progress_bar("extract mocov2/seed0", "img") as update:
        update(0, 8)
        update(8, 8)
    with cli.progress_bar("pretrain mocov2", "step", lines=False) as update:  # its step lines carry the progress
        update(0, 8)
        update(8, 8)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and ISO_LINE.match(lines[0]) and " extract mocov2/seed0 8/8 (100%) " in lines[0], lines


def test_extract_features_reports_progress_with_a_total():
    images = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    calls = []
    feats = extract_features(
        TinyBackbone(), images, np.arange(10), 32, batch_size=4, device="cpu", progress=lambda d, n: calls.append((d, n))
    )
    assert feats.shape == (10, 8)
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]


def test_generated_data_reports_progress_with_a_total():
    calls = []
    syn = generate_synthetic(
        GeneratorSettings(num_classes=2, train_per_class=5, test_per_class=3, image_size=16),
        chunk=4,
        progress=lambda d, n: calls.append((d, n)),
    )
    assert len(syn.labels) == 16
    assert calls == [(0, 16), (4, 16), (8, 16), (12, 16), (16, 16)]


def test_retrieval_reports_progress_over_the_queries():
    rng = np.random.default_rng(0)
    calls = []
    retrieval_metrics(rng.normal(size=(10, 4)), np.arange(10) % 3, chunk_size=4, device="cpu", progress=lambda d, n: calls.append((d, n)))
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]

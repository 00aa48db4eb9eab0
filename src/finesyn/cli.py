"""What every stage CLI shares: load+validate params fast, log to a file beside the outputs,
turn known failures into one clear line and exit code 2 instead of a traceback."""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from finesyn.config import load_params
from finesyn.errors import UserError

console = Console(stderr=True)


def load(params_path: Path):
    """Validate the *whole* params file (a typo anywhere fails every stage) before any work."""
    with user_errors():
        return load_params(params_path)


def on_terminal() -> bool:
    """Whether stderr is a terminal: a live rich bar and rich log lines there; plain lines in a file."""
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


class IsoFormatter(logging.Formatter):
    """`2026-12-04T13:40:01Z INFO finesyn: message`: an unambiguous UTC timestamp on every line."""

    converter: Callable[[float | None], time.struct_time] = time.gmtime

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")


class OncePerRun(logging.Filter):
    """A warning repeated within one run (same logger, level and text: every step, every split)
    is logged the first time only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def stage_logging(log_file: Path | None) -> logging.Logger:
    """INFO logging for a stage: rich lines in a terminal; off a terminal (`dvc repro > log`, SLURM)
    one plain line per record with an ISO timestamp, never wrapped; the same lines in `log_file`."""
    if on_terminal():
        screen: logging.Handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="[%Y-%m-%d %H:%M:%S]")
        screen.setFormatter(logging.Formatter("%(message)s"))
    else:
        screen = logging.StreamHandler(sys.stderr)
        screen.setFormatter(IsoFormatter())
    handlers: list[logging.Handler] = [screen]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as e:
            from finesyn.io import output_write_error

            err = output_write_error(log_file, e, atomic=False)
            raise err from (None if err is e else e)
        fh.setFormatter(IsoFormatter())
        handlers.append(fh)
    for h in handlers:
        h.addFilter(OncePerRun())  # one each: a handler's filter sees every record it handles
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.showwarning = _log_warning  # captureWarnings(False) restores Python's
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is not news
    return logging.getLogger("finesyn")


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as one log line (logging's own adds the source line below it, untimestamped)."""
    logging.getLogger("py.warnings").warning("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


def duration(seconds: float | None) -> str:
    """`0:01:12` (h:mm:ss, as rich's bar shows it); `?` while unknown."""
    return "?" if seconds is None else str(datetime.timedelta(seconds=max(0, round(seconds))))


class Rate:
    """Work per second and time left, averaged since the first observation of this process (a
    resumed run's earlier work does not count)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.first: tuple[int, float] | None = None

    def observe(self, done: int) -> None:
        if self.first is None:
            self.first = (done, self.clock())

    def per_second(self, done: int) -> float | None:
        if self.first is None or done <= self.first[0]:
            return None
        return (done - self.first[0]) / max(self.clock() - self.first[1], 1e-9)

    def eta(self, done: int, total: int) -> float | None:
        rate = self.per_second(done)
        return None if rate is None else (total - done) / rate


class ProgressLines:
    """Progress off a terminal: a log line with done/total, rate and ETA at the first measurable
    update, then every `every_s` seconds, and at the end -- never a bar (a file would get the bar
    only when it ends)."""

    def __init__(self, description: str, unit: str, every_s: float = 10.0, clock=time.monotonic):
        self.description, self.unit, self.every_s, self.clock = description, unit, every_s, clock
        self.rate = Rate(clock)
        self.last_line: float | None = None
        self.log = logging.getLogger("finesyn.progress")

    def update(self, done: int, total: int, info: str | None = None) -> None:
        self.rate.observe(done)
        rate = self.rate.per_second(done)
        now = self.clock()
        finished = done >= total
        due = finished or self.last_line is None or now - self.last_line >= self.every_s
        if rate is None or not due:
            return
        self.last_line = now
        pct = 100.0 * done / total if total else 100.0
        extra = f" {info}" if info else ""
        self.log.info(
            "%s %d/%d (%.0f%%)%s %.1f %s/s ETA %s", self.description, done, total, pct, extra, rate, self.unit,
            duration(self.rate.eta(done, total)),
        )  # fmt: skip


class StepLines:
    """A training loop's on_log and progress: `step 35/93 (epoch 2/3) lr 0.03 L_C=4.1234 812.3 img/s
    ETA 0:01:12` per logged step (the ETA averages this process's steps), `step 84/93 val/...=...`
    per monitor point; `bar` (a progress_bar update) then shows the latest loss and img/s."""

    total: int | None  # the run's steps, from the first `progress` call

    def __init__(self, log: logging.Logger, epochs: int, bar=None, clock=time.monotonic):
        self.log, self.epochs, self.bar = log, epochs, bar
        self.rate, self.total, self.info = Rate(clock), None, ""

    def progress(self, step: int, total: int) -> None:
        self.total = total
        self.rate.observe(step)
        if self.bar is not None:
            self.bar(step, total, self.info)

    def on_log(self, rec: dict) -> None:
        total = "?" if self.total is None else self.total
        if "loss" not in rec:  # a learning-monitor record
            self.log.info("step %d/%s %s", rec["step"], total, " ".join(f"{k}={v:.2f}" for k, v in rec.items() if k != "step"))
            return
        terms = " ".join(f"{k}={rec[k]:.4f}" for k in ("L_C", "L_R", "L_Cp") if k in rec)
        sel = f" n_selected={rec['n_selected']}" if "n_selected" in rec else ""
        eta = duration(None if self.total is None else self.rate.eta(rec["step"], self.total))
        self.log.info(
            "step %d/%s (epoch %d/%d) lr %.4g %s%s %.1f img/s ETA %s",
            rec["step"], total, rec["epoch"] + 1, self.epochs, rec["lr"], terms, sel, rec["images_per_s"], eta,
        )  # fmt: skip
        self.info = f"loss {rec['loss']:.4f} {rec['images_per_s']:.0f} img/s"


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "it", lines: bool = True):
    """Yields update(done, total, info=None). In a terminal: a rich bar (done/total, info, elapsed,
    ETA). Off a terminal: `ProgressLines`, or nothing with `lines=False` (a loop whose own log lines
    already carry its total and ETA, e.g. pretrain's step lines)."""
    if not on_terminal():
        yield ProgressLines(description, unit).update if lines else (lambda done, total, info=None: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=None, info="")
        yield lambda done, total, info=None: bar.update(task, completed=done, total=total, **({"info": info} if info is not None else {}))


@contextlib.contextmanager
def user_errors():
    """Known, user-fixable failures print as one message naming the key/file; exit code 2."""
    try:
        yield
    except (UserError, FileNotFoundError, PermissionError) as e:
        _print_error(e)
        raise SystemExit(2) from None
    except OSError as e:
        # A full disk or an unwritable destination hit by a writer outside finesyn.io (numpy,
        # dvclive, ...): the same clear message, naming the file when the error carries it.
        from finesyn.io import output_write_error

        err = output_write_error(e.filename, e, atomic=False) if e.filename else e
        if err is e:
            _to_log_files(f"{type(e).__name__}: {e}", sys.exc_info())
            raise
        _print_error(err)
        raise SystemExit(2) from None
    except Exception as e:  # a bug: the traceback still goes to stderr, and to the stage's log file
        _to_log_files(f"{type(e).__name__}: {e}", sys.exc_info())
        raise


def _to_log_files(message: str, exc_info=None) -> None:
    """The stage's log file (if it has one) records why it failed, not only stderr."""
    record = logging.LogRecord("finesyn", logging.ERROR, __file__, 0, "%s", (message,), exc_info)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def _print_error(e: BaseException) -> None:
    console.print(Text("error: ", style="bold red") + Text(str(e)), soft_wrap=True)
    _to_log_files(f"error: {e}")

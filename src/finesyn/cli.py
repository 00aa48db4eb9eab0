"""What every stage CLI shares: load+validate params fast, log to a file beside the outputs,
turn known failures into one clear line and exit code 2 instead of a traceback."""

from __future__ import annotations

import contextlib
import logging
import sys
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


def stage_logging(log_file: Path | None) -> logging.Logger:
    rich = RichHandler(console=console, show_path=False, markup=False)
    rich.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [rich]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as e:
            from finesyn.io import output_write_error

            err = output_write_error(log_file, e, atomic=False)
            raise err from (None if err is e else e)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.captureWarnings(True)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is not news
    return logging.getLogger("finesyn")


@contextlib.contextmanager
def progress_bar(description: str):
    """A rich progress bar (steps, rate, ETA); yields update(done, total, info="")."""
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

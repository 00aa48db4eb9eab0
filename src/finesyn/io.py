"""Atomic file writes and output locks.

Every artifact is written to a temporary file in the *same directory* (so the final
``os.replace`` is an atomic rename on one filesystem), flushed and fsynced, then renamed
over the destination. A reader therefore sees either the old complete file or the new
complete file, never a partial one. When writing fails (disk full, read-only or
unwritable destination, ...) the temporary file is removed, the destination is left
untouched, and a full disk or an unwritable destination raises :class:`OutputWriteError`
naming the destination and the remedy.

:func:`output_lock` refuses a second run that would write the same outputs at the same
time (two ``snakemake`` invocations, a manual stage run next to a pipeline run, ...):
an exclusive, non-blocking ``flock`` on a hidden ``.<name>.lock`` file beside the output.
The kernel releases the lock when its holder exits, however it exits, so a killed run
never blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finesyn.errors import UserError

try:  # POSIX only; elsewhere output_lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "OutputLockedError",
    "OutputWriteError",
    "output_write_error",
    "output_lock",
    "lock_path_for",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "fsync_dir",
    "preallocated_npy",
]

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


class OutputWriteError(UserError, OSError):
    """An output could not be written (disk full, read-only or unwritable destination).

    Raised with the destination untouched and no temporary file left behind. ``str()`` is the
    user-facing message; ``errno`` and ``filename`` are those of the destination.
    """

    def __str__(self) -> str:
        return str(self.strerror)


class OutputLockedError(UserError, RuntimeError):
    """Another live process holds the lock on an output this run would write."""

    def __init__(self, output: str | os.PathLike[str], holder: str, lock_file: str | os.PathLike[str]) -> None:
        self.output, self.holder, self.lock_file = Path(output), holder, Path(lock_file)
        super().__init__(
            f"{output} is being written by another run ({holder}; lock {lock_file}): "
            "two runs writing the same outputs at once would mix their files. Wait for that run "
            "to finish or stop it, then rerun (the lock is released automatically when it exits)."
        )

    def __reduce__(self):
        return (type(self), (self.output, self.holder, self.lock_file))


def output_write_error(path: str | os.PathLike[str], exc: OSError, *, atomic: bool = True) -> OSError:
    """``exc`` reworded as an OutputWriteError naming ``path`` and the remedy when it is a full
    disk or an unwritable destination; any other error is returned unchanged.
    ``atomic``: the failed write left the previous file untouched (say so)."""
    if isinstance(exc, OutputWriteError):
        return exc
    path = Path(path)
    reason = exc.strerror or str(exc)
    kept = "; the previous file, if any, is unchanged" if atomic else ""
    if exc.errno in _DISK_FULL:
        msg = (
            f"cannot write {path}: disk full ({reason}). Free space on the filesystem holding "
            f"{path.parent} (e.g. old checkpoints/, the DVC cache: `dvc gc`) or write the outputs "
            f"elsewhere, then rerun{kept}."
        )
    elif exc.errno in _NOT_WRITABLE:
        msg = (
            f"cannot write {path}: the destination is read-only or not writable ({reason}). "
            f"Make {path.parent} writable for this user (permissions, or remount the filesystem "
            f"read-write) or write the outputs elsewhere, then rerun{kept}."
        )
    else:
        return exc
    return OutputWriteError(exc.errno, msg, os.fspath(path))


def _reraise(path: Path, exc: OSError, atomic: bool = True) -> None:
    """Raise ``exc`` as an OutputWriteError when it is a full disk / unwritable destination, else as is."""
    err = output_write_error(path, exc, atomic=atomic)
    if err is exc:
        raise exc
    raise err from exc


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises instead on Linux
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir + fsync + os.replace).

    On any failure the temporary file is removed and ``path`` keeps its previous content (or
    stays absent); a full disk or an unwritable destination raises :class:`OutputWriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        _reraise(path, e)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            _reraise(path, e)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Serialize ``obj`` as JSON (UTF-8, trailing newline) and write it atomically. NaN and inf are
    refused, naming the key: json.dumps would write them as bare NaN, which is not JSON (jq, dvc
    metrics and browsers reject the file) and always means an upstream result went wrong."""
    try:
        text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as e:
        bad = _nonfinite_key(obj)
        if bad is None:
            raise
        raise ValueError(
            f"{path}: not written: {bad} is not a finite number (JSON has no NaN or inf); the value is a failed result upstream"
        ) from e
    return atomic_write_text(path, text)


def _nonfinite_key(obj: Any, at: str = "") -> str | None:
    """The dotted key of the first NaN/inf float in a JSON-like object, with its value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{at or '(the value)'} = {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for k, v in items:
        found = _nonfinite_key(v, f"{at}.{k}" if at else str(k))
        if found:
            return found
    return None


def preallocated_npy(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: str = "uint8") -> Path:
    """Create ``path`` as a zero-filled .npy of ``shape`` with every block allocated on disk.

    ``open_memmap`` makes a sparse file: the disk fills only when the mapped pages are written,
    and a write through a mapping that finds no free block kills the process with SIGBUS (no
    message; a pool of workers dies as BrokenProcessPool). Allocating up front turns a full disk
    into OutputWriteError here, before anything else is touched; the file is then removed.
    """
    import numpy as np

    path = Path(path)
    try:
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        del mm
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        need = int(np.prod(shape)) * np.dtype(dtype).itemsize
        err = output_write_error(path, e)
        if err is e:
            raise
        free = _free_bytes(path.parent)
        raise OutputWriteError(
            err.errno, f"{err.strerror} (it needs {need / 2**30:.2f} GiB; {free / 2**30:.2f} GiB free)", err.filename
        ) from e
    return path


def _free_bytes(directory: Path) -> float:
    try:
        return float(shutil.disk_usage(directory).free)
    except OSError:
        return float("nan")


# ----------------------------------------------------------------------------- output locks
def lock_path_for(output: str | os.PathLike[str]) -> Path:
    """The lock file of an output (file or directory): a hidden ``.<name>.lock`` beside it."""
    output = Path(os.path.abspath(output))
    return output.with_name(f".{output.name}.lock")


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    text = ""
    for _ in range(10):  # the holder writes its pid right after locking: give it a moment
        with contextlib.suppress(OSError):
            text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        if text:
            break
        time.sleep(0.02)
    parts = text.split()
    if not parts or not parts[0].isdigit():
        return "pid unknown"
    pid, host = int(parts[0]), (parts[1] if len(parts) > 1 else "")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {pid}{where}" + (" — this same process" if pid == os.getpid() and not where else "")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on ``output`` (a file or directory) for the duration of the block.

    Non-blocking: if another process holds it, raise :class:`OutputLockedError` naming the
    output and the holder's pid at once. The lock file is removed on release. Not re-entrant:
    locking the same output twice, even in one process, is refused.
    """
    output = Path(output)
    lock = lock_path_for(output)
    if fcntl is None:  # pragma: no cover
        yield lock
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _reraise(lock, e, atomic=False)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            _reraise(lock, e, atomic=False)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputLockedError(output, holder, lock) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder unlinks the file before unlocking: if we locked an unlinked
        # file, someone else may already hold a fresh one at this path. Retry on the new file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the pid is informative only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)

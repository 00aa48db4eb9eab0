"""Artifacts are never half-written; concurrent writers of the same outputs are refused.

Faults are injected by monkeypatching the syscalls the writers use (os.write, os.fsync,
tempfile.mkstemp, os.replace), because a real full disk or read-only mount cannot be made in a
test, and chmod does not stop root. The chmod test runs only as a non-root user.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finesyn import io as fio
from finesyn.cli import stage_logging, user_errors
from finesyn.io import (
    OutputLockedError,
    OutputWriteError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    lock_path_for,
    output_lock,
)

OLD = b"old complete content\n"
NEW = b"x" * (3 * 1024 * 1024)  # several os.write calls' worth


def _leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


@pytest.fixture
def dest(tmp_path) -> Path:
    p = tmp_path / "out" / "encoder.pt"
    p.parent.mkdir()
    p.write_bytes(OLD)
    return p


def _raise(code: int):
    def f(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return f


# ----------------------------------------------------------------------------- atomic writers
def test_atomic_write_replaces_and_leaves_no_temp(dest):
    atomic_write_bytes(dest, NEW)
    assert dest.read_bytes() == NEW
    assert _leftovers(dest.parent, {dest.name}) == []
    atomic_write_json(dest.parent / "a.json", {"k": "é"})
    assert (dest.parent / "a.json").read_text(encoding="utf-8") == '{\n  "k": "é"\n}\n'


def test_disk_full_mid_write_leaves_destination_untouched(dest, monkeypatch):
    """ENOSPC after part of the data was written: no temp file, old file intact, clear error."""
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data[: len(data) // 2]))  # a short write, then the disk is full

    monkeypatch.setattr(fio.os, "write", write)
    with pytest.raises(OutputWriteError) as e:
        atomic_write_bytes(dest, NEW)
    assert len(calls) == 2
    assert dest.read_bytes() == OLD
    assert _leftovers(dest.parent, {dest.name}) == []
    msg = str(e.value)
    assert str(dest) in msg and "disk full" in msg and "Free space" in msg and "unchanged" in msg
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC and e.value.filename == str(dest)
    assert isinstance(e.value.__cause__, OSError)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_at_fsync_new_file_stays_absent(tmp_path, monkeypatch, code):
    monkeypatch.setattr(fio.os, "fsync", _raise(code))
    target = tmp_path / "features" / "seed0.npz"
    with pytest.raises(OutputWriteError, match="disk full"):
        atomic_write_bytes(target, NEW)
    assert not target.exists()
    assert _leftovers(target.parent, set()) == []


def test_disk_full_through_json_and_text_writers(dest, monkeypatch):
    monkeypatch.setattr(fio.os, "write", _raise(errno.ENOSPC))
    for write, payload in ((atomic_write_json, {"a": 1}), (atomic_write_text, "text")):
        with pytest.raises(OutputWriteError, match="disk full"):
            write(dest, payload)
        assert dest.read_bytes() == OLD
    assert _leftovers(dest.parent, {dest.name}) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_unwritable_directory_cannot_create_temp(dest, monkeypatch, code):
    """mkstemp fails as on a read-only mount / a directory without write permission."""
    monkeypatch.setattr(fio.tempfile, "mkstemp", _raise(code))
    with pytest.raises(OutputWriteError) as e:
        atomic_write_bytes(dest, NEW)
    assert "read-only or not writable" in str(e.value) and str(dest) in str(e.value) and "writable" in str(e.value)
    assert e.value.errno == code
    assert dest.read_bytes() == OLD and _leftovers(dest.parent, {dest.name}) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_rename_refused_removes_temp(dest, monkeypatch, code):
    """The temp file was written but the rename is refused: it is removed, the old file stays."""
    monkeypatch.setattr(fio.os, "replace", _raise(code))
    with pytest.raises(OutputWriteError, match="read-only or not writable"):
        atomic_write_bytes(dest, NEW)
    assert dest.read_bytes() == OLD and _leftovers(dest.parent, {dest.name}) == []


def test_unwritable_parent_cannot_be_created(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", _raise(errno.EROFS))
    with pytest.raises(OutputWriteError, match="read-only or not writable"):
        atomic_write_bytes(tmp_path / "new" / "f.json", b"{}")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="chmod does not stop root from writing")
def test_real_read_only_directory(dest):
    dest.parent.chmod(0o555)
    try:
        with pytest.raises(OutputWriteError, match="read-only or not writable"):
            atomic_write_bytes(dest, NEW)
        assert dest.read_bytes() == OLD and _leftovers(dest.parent, {dest.name}) == []
    finally:
        dest.parent.chmod(0o755)


def test_other_errors_and_interrupts_keep_their_type_but_clean_up(dest, monkeypatch):
    monkeypatch.setattr(fio.os, "fsync", _raise(errno.EIO))
    with pytest.raises(OSError) as e:
        atomic_write_bytes(dest, NEW)
    assert not isinstance(e.value, OutputWriteError) and e.value.errno == errno.EIO

    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(fio.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(dest, NEW)
    assert dest.read_bytes() == OLD and _leftovers(dest.parent, {dest.name}) == []


def test_output_write_error_pickles():
    """Worker processes can send it back to the parent intact."""
    err = fio.output_write_error("a/b.json", OSError(errno.ENOSPC, "No space left on device"))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is OutputWriteError and str(back) == str(err) and back.filename == "a/b.json"


# ----------------------------------------------------------------------------- one clear line, exit 2
def test_user_errors_prints_one_line_for_write_failures(dest, monkeypatch, capsys):
    monkeypatch.setattr(fio.os, "write", _raise(errno.ENOSPC))
    with pytest.raises(SystemExit) as e, user_errors():
        atomic_write_json(dest, {})
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "encoder.pt" in err and "Traceback" not in err


def test_user_errors_words_foreign_writers_failures(tmp_path, capsys):
    """A full disk hit by a writer outside finesyn.io (numpy, dvclive, ...) gets the same wording."""
    target = tmp_path / "images.npy"
    with pytest.raises(SystemExit) as e, user_errors():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "images.npy" in err and "unchanged" not in err  # no atomicity claim
    with pytest.raises(OSError), user_errors():  # without a filename there is nothing better to say
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_unwritable_log_file_is_a_clear_error(tmp_path, monkeypatch):
    import logging

    monkeypatch.setattr(logging, "FileHandler", _raise(errno.EROFS))
    with pytest.raises(OutputWriteError, match="train.log: the destination is read-only or not writable"):
        stage_logging(tmp_path / "train.log")


# ----------------------------------------------------------------------------- output locks
HOLDER = textwrap.dedent("""
    import sys, time
    from finesyn.io import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock on an output; yields (process, output)."""
    procs = []

    def start(output: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_lock_file_beside_output_holds_pid_and_is_removed(tmp_path):
    out = tmp_path / "models" / "seed0"
    with output_lock(out) as lock:
        assert lock == lock_path_for(out) == tmp_path / "models" / ".seed0.lock"
        assert lock.read_text().split()[0] == str(os.getpid())
        assert not out.exists()  # the output itself is not created or touched
    assert not lock.exists()


def test_second_run_is_refused_naming_output_and_pid(tmp_path, holder):
    out = tmp_path / "metrics" / "probe.json"
    p = holder(out)
    with pytest.raises(OutputLockedError) as e:
        with output_lock(out):
            pytest.fail("entered a lock held by another process")
    msg = str(e.value)
    assert str(out) in msg and f"pid {p.pid}" in msg and "another run" in msg
    assert e.value.output == out and e.value.lock_file == lock_path_for(out)
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(timeout=10)
    with output_lock(out):  # released when the holder finished
        pass


def test_killed_holder_never_blocks_the_next_run(tmp_path, holder):
    out = tmp_path / "models" / "seed0"
    p = holder(out)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    assert lock_path_for(out).exists()  # stale file with a dead pid: harmless
    with output_lock(out) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())


def test_same_process_twice_is_refused(tmp_path):
    out = tmp_path / "f.json"
    with output_lock(out):
        with pytest.raises(OutputLockedError, match="this same process"):
            with output_lock(out):
                pass
    with output_lock(out):  # and an error inside the block releases it
        pass


def test_lock_released_on_error(tmp_path):
    out = tmp_path / "f.json"
    with pytest.raises(ValueError), output_lock(out):
        raise ValueError("boom")
    assert not lock_path_for(out).exists()
    with output_lock(out):
        pass


def test_locking_a_file_unlinked_by_its_previous_holder_retries(tmp_path, holder, monkeypatch):
    """Race: we open the lock file, its holder unlinks it and releases, a third run creates and
    locks a new one. Our flock then succeeds on the dead inode: we must notice and be refused."""
    out = tmp_path / "f.json"
    lock = lock_path_for(out)
    lock.write_text("999999\n")
    stale_fd = os.open(lock, os.O_RDWR)
    lock.unlink()
    p = holder(out)  # the third run, holding a new lock file at the same path
    real_open, opened = os.open, []

    def open_(path, *args, **kwargs):
        opened.append(path)
        return stale_fd if len(opened) == 1 else real_open(path, *args, **kwargs)

    monkeypatch.setattr(fio.os, "open", open_)
    with pytest.raises(OutputLockedError, match=f"pid {p.pid}"):
        with output_lock(out):
            pytest.fail("entered a lock held by another process")
    assert len(opened) == 2


def test_lock_in_unwritable_place_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fio.os, "open", _raise(errno.EROFS))
    with pytest.raises(OutputWriteError, match="read-only or not writable"):
        with output_lock(tmp_path / "f.json"):
            pass


def test_stage_refuses_to_run_while_its_output_is_locked(repo_root, tmp_path):
    """A stage CLI (validate: the cheapest) exits 2 with one line naming the output and the pid."""
    out = tmp_path / "params.resolved.json"
    with output_lock(out):
        r = subprocess.run(
            [sys.executable, str(repo_root / "stages" / "validate.py"), "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=repo_root,
            timeout=120,
        )
    assert r.returncode == 2, r.stderr
    assert str(out) in r.stderr and f"pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_every_stage_locks_its_outputs(repo_root):
    """Each stage CLI takes output_lock on what it writes (a stage rewritten without it fails here)."""
    stages = sorted(s for s in (repo_root / "stages").glob("*.py") if not s.name.startswith("_"))  # _local_src: a helper
    assert stages
    missing = [s.name for s in stages if "output_lock(" not in s.read_text()]
    assert not missing, f"stages without output_lock: {missing}"


def test_json_with_nan_is_refused_naming_the_key_and_the_old_file_stays(tmp_path):
    """`"l2": NaN` is not JSON; json.dumps writes it unless told not to."""
    dest = tmp_path / "probe.meta.json"
    atomic_write_json(dest, {"l2": 1e-4})
    with pytest.raises(ValueError, match=r"probe\.meta\.json: not written: selection\.grid\.1 = nan"):
        atomic_write_json(dest, {"selection": {"grid": [1e-4, float("nan")]}})
    assert dest.read_text() == '{\n  "l2": 0.0001\n}\n' and [p.name for p in tmp_path.iterdir()] == [dest.name]

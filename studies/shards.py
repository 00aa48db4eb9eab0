"""The shard loop the studies share: this process's share of the (variant or arm, seed) runs, one after
another, each row appended to the rows file as it ends (so an interrupted study keeps what finished)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def my_share(jobs: Sequence, shard: str) -> list:
    """`shard` "i/n": every n-th job from the i-th (n processes side by side split the list)."""
    i, n = (int(x) for x in shard.split("/"))
    return list(jobs[i::n])


def run_shard(jobs: Sequence[tuple[str, int]], out: Path, run: Callable[[str, int, Path], dict], brief: Sequence[str], prefix: str) -> None:
    """`run(name, seed, tmp)` per job (checkpoints under one temporary folder); each row appended to `out` as one JSON
    line, and its `brief` keys printed."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for name, seed in jobs:
            row = run(name, seed, Path(tmp))
            fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:  # one write(2) with O_APPEND: rows of parallel shards never interleave (a buffered file may split a long row)
                os.write(fd, (json.dumps(row) + "\n").encode())
            finally:
                os.close(fd)
            print(json.dumps({k: row[k] for k in brief}), flush=True)

"""What produced a result: code version, library versions, params hash. Recorded in every artifact."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any


def params_hash(obj: Any) -> str:
    """sha256 (first 16 hex) of the canonical JSON of the settings that determine a result."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The last git commit that changed src/ or stages/ (with '-dirty' if they have uncommitted edits).

    Not HEAD: a commit that changes only params (each queued `dvc exp run` makes one) must not change
    the bytes of an artifact whose inputs did not change (the encoder file records this), or DVC
    would rerun everything downstream of it.
    """
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        rev = git("log", "-1", "--format=%H", "--", "src", "stages") or git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "src", "stages")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    # torchvision from its metadata: importing it pulls in torch._dynamo (~2 s per stage process),
    # and torch's version already names the build (e.g. +cu130)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": metadata.version("torchvision"), "numpy": numpy.__version__}
    try:
        import faiss

        versions["faiss"] = faiss.__version__
    except ImportError:
        pass
    return versions


def provenance(seed: int | None, params: Any, protocol: Any = None) -> dict[str, Any]:
    out = {"code_version": code_version(), "params_hash": params_hash(params), "seed": seed, "libraries": library_versions()}
    if protocol is not None:
        out["protocol"] = protocol
    return out

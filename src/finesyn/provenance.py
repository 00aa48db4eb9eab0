"""What produced a result: code version, library versions, params hash. Recorded in every artifact."""

from __future__ import annotations

import hashlib
import json
import platform
import re
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
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": metadata.version("torchvision"),
        "numpy": numpy.__version__,
    }
    try:
        import faiss

        versions["faiss"] = faiss.__version__
    except ImportError:
        pass
    return versions


def cpuinfo() -> dict[str, Any]:
    """CPU model, physical core count and SIMD flags from /proc/cpuinfo (platform's guess elsewhere), and what
    tells two CPUs of one marketing name apart: family / model / stepping and a digest of all their flags."""
    model, cores, flags, ident = None, set(), "", {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "physical_cores": None, "isa": []}
    phys = None
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
        elif key == "flags" and not flags:
            flags = value
        elif key in ("cpu family", "model", "stepping") and key not in ident:
            ident[key] = value
    isa = sorted(f for f in flags.split() if f.startswith(("avx", "amx", "fma", "sse4")))
    return {
        "cpu_model": model,
        "physical_cores": len(cores) or None,
        "isa": isa,
        "cpu_family_model_stepping": "/".join(ident.get(k, "?") for k in ("cpu family", "model", "stepping")) if ident else None,
        "cpu_flags_digest": hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12] if flags else None,
    }


def _build_setting(config: str, key: str) -> str | None:
    """One ``KEY=value`` of ``torch.__config__.show()`` (e.g. BLAS_INFO=mkl)."""
    m = re.search(rf"\b{key}=([^,\s]+)", config)
    return m.group(1) if m else None


@lru_cache(maxsize=1)
def machine() -> dict[str, Any]:
    """What makes float results differ in the last digits between machines: the CPU, the SIMD level
    torch's kernels dispatch to (AVX512 / AVX2 / DEFAULT), and the BLAS that torch and numpy call."""
    import numpy
    import torch

    config = torch.__config__.show()
    try:
        numpy_blas: Any = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        numpy_blas = f"{numpy_blas.get('name')} {numpy_blas.get('version')}"
    except (TypeError, KeyError, AttributeError):  # numpy < 1.26 has no dict mode
        numpy_blas = None
    cpu = cpuinfo()
    return {
        "cpu_model": cpu["cpu_model"],
        "cpu_family_model_stepping": cpu.get("cpu_family_model_stepping"),
        "cpu_flags_digest": cpu.get("cpu_flags_digest"),
        "arch": platform.machine(),
        "torch_build": f"{torch.__version__} ({torch.version.git_version[:12]})",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_blas": _build_setting(config, "BLAS_INFO"),
        "torch_lapack": _build_setting(config, "LAPACK_INFO"),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "numpy_blas": numpy_blas,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def provenance(seed: int | None, params: Any, protocol: Any = None) -> dict[str, Any]:
    """Code and library versions, params hash, seed and the machine (bit-exactness holds only on the
    same machine with the same libraries; see README "Reproducibility")."""
    out = {
        "code_version": code_version(),
        "params_hash": params_hash(params),
        "seed": seed,
        "libraries": library_versions(),
        "machine": machine(),
    }
    if protocol is not None:
        out["protocol"] = protocol
    return out

"""The machine the numbers were taken on, and its measured matrix-multiply peak."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time

from benchmarks.common import Context


def info() -> dict:
    import numpy
    import torch
    import torchvision

    from finesyn.provenance import code_version, cpuinfo

    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:  # pragma: no cover
        faiss_version = None
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    blas = None
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")} for d in threadpool_info()]
    except ImportError:
        pass
    return {
        **cpuinfo(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "faiss": faiss_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threadpools": blas,
        "env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ
        },
        "git_revision": code_version(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def matmul_peak(quick: bool) -> dict:
    """Best fp32 torch.mm rate (2·n³ FLOP per product) over a few sizes and repetitions, on torch's threads.

    The denominator of the efficiency benchmark: what this machine's BLAS reaches on the most
    favourable kernel, so "fraction of peak" is relative to a measured, not a datasheet, number.
    """
    import torch

    sizes, reps = ((256, 512), 3) if quick else ((2048, 4096), 4)
    out = {"dtype": "float32", "threads": torch.get_num_threads(), "by_size": {}}
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            rates.append(2 * n**3 / (time.perf_counter() - t0))
        out["by_size"][str(n)] = {
            "best_gflops": round(max(rates) / 1e9, 2),
            "median_gflops": round(sorted(rates)[len(rates) // 2] / 1e9, 2),
        }
        best = max(best, max(rates))
    out["peak_gflops"] = round(best / 1e9, 2)
    return out


def run(ctx: Context) -> dict:
    return {"info": info(), "matmul_peak_start": matmul_peak(ctx.quick)}

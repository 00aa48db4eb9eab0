"""Tolerances from the arithmetic, not from one machine's observed differences.

Two evaluations of one computation that differ only in summation order (another memory layout,
another number of processes, another BLAS kernel) each lie within k*u of the exact result, k the
computation's condition number, u the unit roundoff; so they differ by at most 2*k*u. A whole
training step has no k one can write down, but a float32 step is only meaningful if k*U32 < 1.
Run in float64, the same step in two orders must therefore agree to 2*U64/U32 = 2^-28 relative
(SAME_STEP_REL) on any CPU. Single operations use their own bound (gamma_n for an n-term sum).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

U32 = torch.finfo(torch.float32).eps / 2  # 2^-24
U64 = torch.finfo(torch.float64).eps / 2  # 2^-53
SAME_STEP_REL = 2 * U64 / U32  # 2^-28 ≈ 3.7e-9


def gamma32(n: int) -> float:
    """Higham's gamma_n: the relative error bound of an n-term float32 dot product, any order, FMA or not."""
    return n * U32 / (1 - n * U32)


@contextmanager
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)

"""Device selection and mixed precision (CUDA > MPS > CPU, bf16 where supported else fp16 + scaler),
host-to-device copies and memory format."""

from __future__ import annotations

import contextlib

import torch

from finesyn.errors import UserError


class DeviceUnavailableError(UserError, RuntimeError):
    """A device setting (pretrain.device, probe.sgd_device) names a device this machine does not have."""


def select_device(choice: str = "auto", key: str = "pretrain.device") -> torch.device:
    """`key` is the params.yaml setting the choice came from, named in the error."""
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"{key}: 'cuda' requested but torch sees no CUDA device (use 'auto' or 'cpu')")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(f"{key}: 'mps' requested but MPS is not available (use 'auto' or 'cpu')")
    return torch.device(choice)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Mixed precision only on CUDA: bf16 if the GPU supports it, else fp16 (which needs a GradScaler)."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def host_to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU batch to `device`. On CUDA it goes through pinned memory: a non_blocking copy from
    pageable memory is synchronous, so without pinning the copy cannot overlap the previous step."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device, non_blocking=True)

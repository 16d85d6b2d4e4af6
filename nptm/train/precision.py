"""``--precision``: autocast dtype and loss scaling of training and evaluation.

auto: bf16 autocast on CUDA, fp32 elsewhere. fp32: no autocast. bf16: bf16 autocast (on the CPU too:
torch's CPU autocast runs convolutions and matmuls in bf16; slower than fp32 on CPUs without AVX512-BF16
or AMX, so only for checking a recipe). fp16: fp16 autocast with a GradScaler, CUDA only.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """fp32, bf16 or fp16 for ``precision`` on ``device``; fp16 off CUDA -> ValueError."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (its GradScaler); on {device.type} use bf16 or fp32")
    return precision


def autocast(device: torch.device | str, precision: str):
    """The autocast context of a resolved ``precision`` (fp32: a no-op context)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (small gradients would underflow), else None."""
    return torch.amp.GradScaler(torch.device(device).type) if precision == "fp16" else None

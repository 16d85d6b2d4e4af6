"""Typed Python API over the compiled ``torch.ops.nptm`` operators (CPU: OpenMP, CUDA: fused kernels)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from nptm.ops._torch_check import check_build

check_build()  # one clear line, instead of an undefined symbol, when torch changed since the build
from nptm import _C  # noqa: E402,F401  (registers torch.ops.nptm.*)
from nptm.ops import _fake  # noqa: E402,F401  (shapes for torch.compile)

__all__ = ["has_cuda_kernels", "apply_masks_", "global_magnitude_masks", "gather_channels", "count_to_prune"]


def has_cuda_kernels() -> bool:
    """Whether the CUDA kernels were compiled into ``nptm._C``."""
    return bool(_C.has_cuda_kernels())


@torch.no_grad()
def apply_masks_(
    tensors: Sequence[Tensor], masks: Sequence[Tensor], *, extra: Sequence[Sequence[Tensor | None]] | None = None
) -> None:
    """Zero the pruned entries (mask False/0) of ``tensors`` in place, in one fused pass.

    ``extra`` holds further groups aligned with ``masks`` (gradients, optimizer buffers); ``None``
    entries in a group are skipped. Float dtypes may mix; memory listed twice (a shared parameter) is
    zeroed where any of its masks prunes it. On CUDA the launch plan is cached per (pointers, shapes):
    keep each mask in its tensor's memory format to spare a mask copy per call.
    """
    if len(tensors) != len(masks):
        raise ValueError(f"apply_masks_: {len(tensors)} tensors but {len(masks)} masks")
    ts, ms = list(tensors), list(masks)
    for g, group in enumerate(extra or ()):
        if len(group) != len(masks):
            raise ValueError(f"apply_masks_: extra group {g} has {len(group)} tensors but there are {len(masks)} masks")
        for t, m in zip(group, masks):
            if t is not None:
                ts.append(t)
                ms.append(m)
    if ts:
        torch.ops.nptm.apply_masks_(ts, ms)


def count_to_prune(amount: float | int, alive: int) -> int:
    """k = round(amount * alive) for a fraction, or the count itself for an int; errors when out of range."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"amount must be a float fraction or an int count, got {type(amount).__name__}")
    if isinstance(amount, int):
        if not 0 <= amount <= alive:
            raise ValueError(f"amount={amount} is outside [0, {alive}] (the alive entries)")
        return amount
    if math.isnan(amount) or not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount={amount} is outside [0, 1]")
    return round(amount * alive)


@torch.no_grad()
def global_magnitude_masks(
    tensors: Sequence[Tensor],
    amount: float | int,
    *,
    masks: Sequence[Tensor] | None = None,
    scores: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """Bool masks pruning the ``amount`` smallest-magnitude alive entries across all ``tensors``.

    ``amount`` is a fraction of the alive entries (k = round(amount * alive)) or an int count.
    Entries already pruned in ``masks`` stay pruned and are not ranked. ``scores`` (aligned with
    ``tensors``) replace |w|. Ties are pruned in (tensor, flat index) order; NaN scores raise.
    """
    src = list(tensors if scores is None else scores)
    if scores is not None and len(scores) != len(tensors):
        raise ValueError(f"global_magnitude_masks: {len(tensors)} tensors but {len(scores)} scores")
    if scores is not None:
        for i, (t, s) in enumerate(zip(tensors, scores)):
            if s.numel() != t.numel():
                raise ValueError(f"global_magnitude_masks: scores {i} has {s.numel()} elements but tensor {i} has {t.numel()}")
    ms = list(masks) if masks is not None else []
    if ms and len(ms) != len(src):
        raise ValueError(f"global_magnitude_masks: {len(src)} tensors but {len(ms)} masks")
    if not src:
        count_to_prune(amount, 0)
        return []
    if ms and isinstance(amount, float):  # the kernel counts the alive entries in its own pass
        count_to_prune(amount, 0)
        return list(torch.ops.nptm.global_magnitude_masks(src, ms, -1, scores is None, amount))
    if ms:
        alive = int(torch.stack([m.count_nonzero().to(src[0].device) for m in ms]).sum())
    else:
        alive = sum(t.numel() for t in src)
    k = count_to_prune(amount, alive)
    return list(torch.ops.nptm.global_magnitude_masks(src, ms, k, scores is None))


@torch.no_grad()
def gather_channels(tensors_and_indices: Sequence[tuple[Tensor, int, Tensor]], *, synchronous_check: bool = True) -> list[Tensor]:
    """For each (tensor, dim, index) a new contiguous tensor keeping only ``index`` along ``dim``.

    Out-of-range indices raise ``IndexError``; on CUDA that costs one host sync per call, which
    ``synchronous_check=False`` skips (a bad index then fails a device assert at the next sync).
    """
    if not tensors_and_indices:
        return []
    tensors, dims, indices = zip(*tensors_and_indices)
    return list(torch.ops.nptm.gather_channels(list(tensors), [int(d) for d in dims], list(indices), synchronous_check))

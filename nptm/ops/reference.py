"""Plain-PyTorch references for the nptm kernels: the definition every kernel must match bit for bit."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


@torch.no_grad()
def apply_masks_(tensors: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """Zero (+0.0) every entry of tensors[i] whose mask entry is 0/False.

    Tensors may mix float dtypes. Memory reached through several tensors (a parameter shared by two
    modules listed twice, overlapping views) is zeroed where any of their masks is 0: the masks are
    ANDed, whatever the list order.
    """
    for t, m in zip(tensors, masks, strict=True):
        t.masked_fill_(m.reshape(t.shape).logical_not(), 0)


@torch.no_grad()
def global_magnitude_masks(scores: Sequence[Tensor], masks: Sequence[Tensor], k: int, use_abs: bool) -> list[Tensor]:
    """Prune the k smallest alive scores across all tensors; ties go in (tensor, flat index) order.

    Scores may mix float dtypes (e.g. bf16 and fp32 tensors in one call): values are compared exactly,
    as float64, which holds every fp16/bf16/fp32 value, so a bf16 1.0 ties an fp32 1.0 and an fp32
    1.0001 ranks above both. -0.0 ties +0.0; NaN in an alive entry raises.
    """
    if not scores:
        return []
    flat = torch.cat([(s.abs() if use_abs else s).reshape(-1).double() for s in scores])
    alive = torch.cat(
        [m.reshape(-1).bool() for m in masks] if masks else [torch.ones(s.numel(), dtype=torch.bool, device=s.device) for s in scores]
    )
    idx = alive.nonzero().squeeze(1)
    vals = flat[idx]
    bad = vals.isnan().nonzero()
    if bad.numel():
        sizes = torch.tensor([s.numel() for s in scores]).cumsum(0)
        tensor = int(torch.searchsorted(sizes, idx[bad[0, 0]].cpu(), right=True))
        raise ValueError(f"global_magnitude_masks: NaN score in tensor {tensor}")
    if not 0 <= k <= idx.numel():
        raise ValueError(f"global_magnitude_masks: k={k} but only {idx.numel()} entries are alive")
    order = torch.sort(vals, stable=True).indices
    alive[idx[order[:k]]] = False
    return [a.reshape(s.shape) for a, s in zip(alive.split([s.numel() for s in scores]), scores)]


@torch.no_grad()
def gather_channels(tensors: Sequence[Tensor], dims: Sequence[int], indices: Sequence[Tensor]) -> list[Tensor]:
    """New contiguous tensors keeping only the indexed slices along each dim."""
    return [t.index_select(d, i).contiguous() for t, d, i in zip(tensors, dims, indices, strict=True)]

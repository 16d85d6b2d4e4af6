"""Plain-PyTorch references for the nptm kernels: the definition every kernel must match bit for bit."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
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


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)


@torch.no_grad()
def sparse_conv2d(input: Tensor, values: Tensor, taps: Tensor, row_ptr: Tensor, weight_shape: Sequence[int], bias: Tensor | None = None,
                  residual: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1,
                  clamp_min: float | None = None, clamp_max: float | None = None) -> Tensor:
    """clamp(sum over each output channel's stored weights of weight * input tap + bias + residual), in float64
    from the unfolded input (the kernel sums in another order: compare with a tolerance). Only stored weights
    (a stored block's zeros included) form products: NaN/Inf activations propagate through them alone."""
    cout, cin_g, kh, kw = (int(x) for x in weight_shape)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, _, h, w = input.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = F.unfold(input.double(), (kh, kw), dilation=dilation, padding=padding, stride=stride)  # [N, C*kh*kw, L], c-major
    if values.dim() == 2:  # blocked: entry j of row r holds values[j, b] for channel g * cpg + (r % R) * B + b, b < B
        cpg, block = cout // groups, values.shape[1]
        per_group = -(-cpg // block)
        row = torch.repeat_interleave(torch.arange(row_ptr.numel() - 1), row_ptr.diff())
        first = (row % per_group) * block
        oc = ((row // per_group) * cpg + first)[:, None] + torch.arange(block)
        keep = (first[:, None] + torch.arange(block) < cpg).reshape(-1)  # not past the group's end
        oc, taps, values = oc.reshape(-1)[keep], taps.repeat_interleave(block)[keep], values.reshape(-1)[keep]
    else:
        oc = torch.repeat_interleave(torch.arange(cout), row_ptr.diff())
    rows = (oc // (cout // groups)) * (cin_g * kh * kw) + taps.long()
    products = cols[:, rows, :] * values.double()[None, :, None]
    out = torch.zeros(n, cout, cols.shape[-1], dtype=torch.float64).index_add_(1, oc, products).view(n, cout, ho, wo)
    if bias is not None:
        out = out + bias.double().view(1, -1, 1, 1)
    if residual is not None:
        out = out + residual.double()
    if clamp_min is not None or clamp_max is not None:
        out = torch.clamp(out, clamp_min, clamp_max)
    return out.float()

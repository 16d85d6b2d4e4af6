"""N:M semi-structured masks (2:4 by default), the GPU route to speed from sparsity.

In every group of M consecutive weights along a layer's input (a linear's rows; a conv's weight viewed as
``[out, in * kh * kw]``, the reduction dimension of its implicit GEMM) the N lowest-scoring are pruned, ties by
position (the earlier pruned first), so a masked linear weight is what ``torch.sparse.to_sparse_semi_structured``
accepts (2:4 on fp16/bf16 weights, on NVIDIA GPUs with sparse tensor cores: Ampere and later). A layer whose input
size is not a multiple of M stays dense. No GPU was available to measure what it gains.
"""
from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_PATTERN = "2:4"


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"N:M"`` -> (N, M) with 0 <= N < M; ValueError otherwise."""
    try:
        n, m = (int(x) for x in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"an N:M pattern looks like 2:4, got {pattern!r}") from None
    if not 0 <= n < m:
        raise ValueError(f"an N:M pattern needs 0 <= N < M, got {pattern!r}")
    return n, m


@torch.no_grad()
def n_m_mask(scores: Tensor, n: int, m: int, mask: Tensor | None = None) -> Tensor:
    """The bool mask (True = kept) pruning the ``n`` lowest ``scores`` of every ``m`` consecutive weights along the
    input; entries an old ``mask`` prunes stay pruned (they count as the lowest, and a group with more than ``n``
    of them keeps fewer than ``m - n``). NaN scores are refused."""
    if scores.isnan().any():
        raise ValueError("NaN scores")
    rows = scores.reshape(scores.shape[0], -1) if scores.dim() > 1 else scores.reshape(1, -1)
    if rows.shape[1] % m:
        return torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.clone()
    keys = rows.double()
    if mask is not None:
        keys = keys.masked_fill(~mask.reshape(keys.shape), float("-inf"))
    groups = keys.reshape(keys.shape[0], -1, m)
    order = torch.sort(groups, dim=-1, stable=True).indices  # ascending; equal keys keep their positions
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], False)
    keep = keep.reshape(scores.shape)
    return keep if mask is None else keep & mask.reshape(scores.shape)

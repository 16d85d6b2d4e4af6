"""Layers that run ``nptm.ops.sparse_conv2d``: a convolution or linear layer whose weight is stored compressed
per output channel (or in blocks of output channels for the register-blocked kernel), with its bias (folded
BatchNorm), and optionally a fused residual add and clamp (ReLU)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from nptm import ops


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# Relative time per stored value of the kernel by ISA and block (1: unstructured): a blocked form is picked where
# its stored values (zeros of a kept block included) times this cost beat the other forms'. From the rates on all
# of ResNet-50's distinct convs at 90% (benchmarks/bench_blocks.py, 1 thread; AVX-512: 53, 74, 94, 103 GFLOP/s,
# AVX2: 45, 61, 65, 59; docs/sparse-inference.md).
BLOCK_COST = {"avx512": {1: 1.0, 2: 0.72, 4: 0.56, 8: 0.51}, "avx2": {1: 1.0, 2: 0.74, 4: 0.69, 8: 0.76}}


PACK_SLACK = 1.6  # blocks whose modeled cost is within this factor of the best one's are timed (nptm.sparse.choose)


def block_costs(weight: Tensor, groups: int = 1) -> dict[int, float]:
    """Block (1, 2, 4 or 8 output channels of a group, where it divides a group's channels) -> its stored values
    (zeros of a kept block included) times ``BLOCK_COST`` of the kernel variant this CPU runs."""
    costs = BLOCK_COST.get(ops.sparse_conv2d_isa(), BLOCK_COST["avx2"])
    w = weight.detach().reshape(weight.shape[0], -1) != 0
    out = {1: float(w.sum())}
    for block in (2, 4, 8):
        if (w.shape[0] // groups) % block == 0:
            out[block] = int(w.view(w.shape[0] // block, block, w.shape[1]).any(1).sum()) * block * costs[block]
    return out


def best_block(weight: Tensor, groups: int = 1) -> int:
    """The block of least modeled cost (``block_costs``; the smaller block on a tie)."""
    costs = block_costs(weight, groups)
    return min(costs, key=lambda b: (costs[b], b))


def block_candidates(weight: Tensor, groups: int = 1) -> list[int]:
    """The blocks worth timing, ``best_block`` first: those within ``PACK_SLACK`` of its modeled cost. The model is
    fitted on 90%-sparse layers; at mid densities packing an unstructured weight in blocks can win although it
    stores more (ResNet-50's 1x1 convs on 56² and 28² inputs at 45% density, unstructured weights in 4x1 blocks:
    1.6-1.7x the unstructured form, one thread on a loaded machine)."""
    costs = block_costs(weight, groups)
    order = sorted(costs, key=lambda b: (costs[b], b))
    return [b for b in order if costs[b] <= PACK_SLACK * costs[order[0]]]


class _Compressed(nn.Module):
    """The compressed weight (buffers ``values``, ``taps``, ``row_ptr``), the bias and the fused epilogue."""

    def __init__(self, weight: Tensor, bias: Tensor | None, block: int = 1, groups: int = 1):
        super().__init__()
        values, taps, row_ptr = ops.compress_weight(weight, block, groups)
        self.register_buffer("values", values)  # [entries] or [entries, block]
        self.register_buffer("taps", taps)
        self.register_buffer("row_ptr", row_ptr)
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu().contiguous())
        self.weight_shape = tuple(int(s) for s in weight.shape)
        self.clamp_min: float | None = None
        self.clamp_max: float | None = None

    @property
    def block(self) -> int:
        """Output channels per stored entry (1: unstructured)."""
        return int(self.values.shape[1]) if self.values.dim() == 2 else 1

    @property
    def density(self) -> float:
        """Fraction of the weight stored (a stored block's zeros included)."""
        total = 1
        for s in self.weight_shape:
            total *= s
        return self.values.numel() / total if total else 0.0

    def dense_weight(self) -> Tensor:
        """The weight as a dense tensor (zeros where nothing is stored)."""
        out = torch.zeros(self.weight_shape[0], math.prod(self.weight_shape[1:]))
        channels = ops.stored_channels(self.row_ptr, self.block, self.weight_shape[0], getattr(self, "groups", 1))
        taps = self.taps.long().repeat_interleave(self.block)
        keep = channels >= 0
        out[channels[keep], taps[keep]] = self.values.reshape(-1)[keep]
        return out.view(self.weight_shape)

    def _epilogue_repr(self) -> str:
        parts = [f"density={self.density:.3f}"] + ([f"block={self.block}"] if self.block > 1 else [])
        if self.clamp_min is not None or self.clamp_max is not None:
            parts.append(f"clamp=({self.clamp_min}, {self.clamp_max})")
        return ", ".join(parts)


class SparseConv2d(_Compressed):
    """``clamp(conv2d(x, W) + bias + residual)`` with W compressed; float32 on CPU, zero padding."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1,
                 block: int = 1):
        super().__init__(weight, bias, block, groups)
        self.stride, self.padding, self.dilation, self.groups = _pair(stride), _pair(padding), _pair(dilation), int(groups)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        # The operator itself, not ops.sparse_conv2d: its argument conversions cost ~6 us a call (the attributes
        # are int tuples already), a third of a near-empty layer's time.
        return torch.ops.nptm.sparse_conv2d.default(x, self.values, self.taps, self.row_ptr, self.weight_shape, self.bias, residual,
                                                    self.stride, self.padding, self.dilation, self.groups, self.clamp_min,
                                                    self.clamp_max)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight_shape
        return (f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, {self._epilogue_repr()}")


class SparseLinear(_Compressed):
    """``clamp(linear(x, W, bias))`` with W compressed; float32 on CPU."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, block: int = 1):
        super().__init__(weight, bias, block)

    def forward(self, x: Tensor) -> Tensor:
        return ops.sparse_linear(x, self.values, self.taps, self.row_ptr, self.weight_shape, self.bias,
                                 clamp_min=self.clamp_min, clamp_max=self.clamp_max)

    def extra_repr(self) -> str:
        return f"in_features={self.weight_shape[1]}, out_features={self.weight_shape[0]}, {self._epilogue_repr()}"


SPARSE_MODULES = (SparseConv2d, SparseLinear)  # the modules that hold a compressed weight


def sparse_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The conv's zero padding as two ints, or None when the sparse op cannot run it (other padding modes,
    asymmetric "same")."""
    if conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        span = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return None if any(s % 2 for s in span) else (span[0] // 2, span[1] // 2)
    return _pair(conv.padding)


def to_sparse(module: nn.Module, block: int | None = None) -> nn.Module | None:
    """The sparse form of a float32 Conv2d / Linear (None when the sparse op cannot run it), register-blocked
    where the weight's nonzeros come in blocks of output channels (``best_block``) unless ``block`` is given."""
    if isinstance(module, nn.Conv2d):
        pad = sparse_padding(module)
        if pad is None or module.weight.dtype != torch.float32:
            return None
        block = best_block(module.weight, module.groups) if block is None else block
        return SparseConv2d(module.weight, module.bias, module.stride, pad, module.dilation, module.groups, block)
    if isinstance(module, nn.Linear) and module.weight.dtype == torch.float32:
        return SparseLinear(module.weight, module.bias, best_block(module.weight) if block is None else block)
    return None


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed on a channels_last copy of an NCHW input (torch's CPU kernel is several times
    faster there: ResNet-50's stem 4.0 -> 1.4 ms), the output back in NCHW. The same values: both kernels scan
    each window in the same order, keep the first maximum and let NaN win."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or not x.is_contiguous() or self.return_indices:
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()

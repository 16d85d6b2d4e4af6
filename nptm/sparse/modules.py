"""Layers that run ``nptm.ops.sparse_conv2d``: a convolution or linear layer whose weight is stored compressed
per output channel, with its bias (folded BatchNorm), and optionally a fused residual add and clamp (ReLU)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from nptm import ops


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Compressed(nn.Module):
    """The compressed weight (buffers ``values``, ``taps``, ``row_ptr``), the bias and the fused epilogue."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        values, taps, row_ptr = ops.compress_weight(weight)
        self.register_buffer("values", values)
        self.register_buffer("taps", taps)
        self.register_buffer("row_ptr", row_ptr)
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu().contiguous())
        self.weight_shape = tuple(int(s) for s in weight.shape)
        self.clamp_min: float | None = None
        self.clamp_max: float | None = None

    @property
    def density(self) -> float:
        """Fraction of the weight stored."""
        total = 1
        for s in self.weight_shape:
            total *= s
        return self.values.numel() / total if total else 0.0

    def dense_weight(self) -> Tensor:
        """The weight as a dense tensor (zeros where nothing is stored)."""
        out = torch.zeros(self.weight_shape[0], int(torch.tensor(self.weight_shape[1:]).prod()))
        rows = torch.repeat_interleave(torch.arange(self.weight_shape[0]), self.row_ptr.diff())
        out[rows, self.taps.long()] = self.values
        return out.view(self.weight_shape)

    def _epilogue_repr(self) -> str:
        parts = [f"density={self.density:.3f}"]
        if self.clamp_min is not None or self.clamp_max is not None:
            parts.append(f"clamp=({self.clamp_min}, {self.clamp_max})")
        return ", ".join(parts)


class SparseConv2d(_Compressed):
    """``clamp(conv2d(x, W) + bias + residual)`` with W compressed; float32 on CPU, zero padding."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1):
        super().__init__(weight, bias)
        self.stride, self.padding, self.dilation, self.groups = _pair(stride), _pair(padding), _pair(dilation), int(groups)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        return ops.sparse_conv2d(x, self.values, self.taps, self.row_ptr, self.weight_shape, self.bias, residual=residual,
                                 stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                                 clamp_min=self.clamp_min, clamp_max=self.clamp_max)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight_shape
        return (f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, {self._epilogue_repr()}")


class SparseLinear(_Compressed):
    """``clamp(linear(x, W, bias))`` with W compressed; float32 on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.sparse_linear(x, self.values, self.taps, self.row_ptr, self.weight_shape, self.bias,
                                 clamp_min=self.clamp_min, clamp_max=self.clamp_max)

    def extra_repr(self) -> str:
        return f"in_features={self.weight_shape[1]}, out_features={self.weight_shape[0]}, {self._epilogue_repr()}"


SPARSE_MODULES = (SparseConv2d, SparseLinear)


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


def to_sparse(module: nn.Module) -> nn.Module | None:
    """The sparse form of a float32 Conv2d / Linear (None when the sparse op cannot run it)."""
    if isinstance(module, nn.Conv2d):
        pad = sparse_padding(module)
        if pad is None or module.weight.dtype != torch.float32:
            return None
        return SparseConv2d(module.weight, module.bias, module.stride, pad, module.dilation, module.groups)
    if isinstance(module, nn.Linear) and module.weight.dtype == torch.float32:
        return SparseLinear(module.weight, module.bias)
    return None

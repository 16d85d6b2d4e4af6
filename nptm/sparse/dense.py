"""The dense form of a conv that stays dense: ``DenseConv2d`` calls oneDNN's convolution directly
(``torch.ops.mkldnn._convolution_pointwise``) with the bias and a residual add in the same call, then the clamp in
place on its output; the result has the input's memory format, as ``nn.Conv2d``'s does. A depthwise conv (groups =
in = out channels) on an input that is not channels_last runs ``nptm.ops.depthwise_conv2d`` instead, bias, residual
and clamp fused: oneDNN reorders an NCHW input to its blocked layout and back, nptm's kernel reads NCHW as it is.

Measured per layer (``benchmarks/bench_dense.py``, CPU time, interleaved): on an NCHW input this runs ResNet-50's
dense 1x1 convs 1.3-1.5x faster than ``nn.Conv2d`` (torch's NCHW 1x1 path is not oneDNN's) and MobileNetV2's
depthwise convs faster through nptm's kernel (docs/sparse-inference.md); ``sparsify`` keeps ``nn.Conv2d`` wherever
it is not measured faster. A weight prepacked for oneDNN makes torch's op compute in channels_last: it is used for
channels_last inputs only (repacked on first use and after any in-place change of the weight, never saved). The
clamp is not fused into oneDNN's epilogue because oneDNN's ReLU/clip turn NaN into a number, while ``torch.clamp``
and the nptm kernels keep NaN. Under ``torch.jit.trace`` (``nptm.sparse.freeze``) the oneDNN route records
``torch.mkldnn_convolution`` and the residual add after it: the tracer cannot record ``_convolution_pointwise``."""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nptm import ops  # noqa: F401  (registers torch.ops.nptm.depthwise_conv2d)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@functools.cache
def onednn_available() -> bool:
    """Whether this torch runs oneDNN on the CPU and has the op ``DenseConv2d`` calls."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class DenseConv2d(nn.Module):
    """``clamp(conv2d(x, W, bias) + residual)`` with zero padding; oneDNN for float32 CPU inputs in NCHW or
    channels_last (a depthwise conv on an input that is not channels_last: ``nptm.ops.depthwise_conv2d``),
    ``F.conv2d`` otherwise (other dtypes and devices, inputs that need a gradient, no oneDNN)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups: int = 1):
        super().__init__()
        weight = weight.detach().contiguous()
        if weight.is_inference():  # made under inference_mode: a normal copy, whose in-place changes are counted
            with torch.inference_mode(False):
                weight = weight.clone()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())
        self.stride, self.padding, self.dilation, self.groups = _pair(stride), _pair(padding), _pair(dilation), int(groups)
        self.clamp_min: float | None = None
        self.clamp_max: float | None = None
        self._packed: tuple | None = None  # (weight version, prepacked weight) for channels_last inputs

    def _float_cpu(self, x: Tensor, residual: Tensor | None) -> bool:
        """float32 CPU tensors, an input that needs no gradient: what both fast routes run."""
        w, b = self.weight, self.bias
        ok = (x.dim() == 4 and x.dtype == w.dtype == torch.float32 and x.device.type == w.device.type == "cpu"
              and not x.requires_grad and (b is None or b.dtype == torch.float32))
        return ok and (residual is None or (residual.dtype == torch.float32 and residual.device.type == "cpu"))

    def _fits(self, x: Tensor, residual: Tensor | None) -> bool:
        return onednn_available() and self._float_cpu(x, residual)

    def is_depthwise(self) -> bool:
        """groups = in = out channels: the weight is [C, 1, kh, kw]."""
        return self.weight.shape[1] == 1 and self.weight.shape[0] == self.groups > 1

    def _runs_depthwise(self, x: Tensor, residual: Tensor | None) -> bool:
        """nptm's depthwise kernel: an input that is not channels_last, no residual that needs a gradient."""
        return (self.is_depthwise() and self._float_cpu(x, residual) and x.shape[1] == self.groups
                and (x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last))
                and (residual is None or not residual.requires_grad))

    def _weight_for(self, x: Tensor) -> Tensor:
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return self.weight
        version = self.weight._version
        if self._packed is None or self._packed[0] != version:
            packed = torch.ops.mkldnn._reorder_convolution_weight(self.weight, list(self.padding), list(self.stride),
                                                                   list(self.dilation), self.groups, list(x.shape))
            self._packed = (version, packed)
        return self._packed[1]

    def output_shape(self, x: Tensor) -> tuple[int, ...]:
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        kh, kw = self.weight.shape[2:]
        return (x.shape[0], self.weight.shape[0], (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if residual is not None and x.dim() == 4 and tuple(residual.shape) != self.output_shape(x):
            raise ValueError(f"DenseConv2d: residual of shape {tuple(residual.shape)} for an output of shape "
                             f"{self.output_shape(x)}")
        if self._runs_depthwise(x, residual):
            return torch.ops.nptm.depthwise_conv2d.default(x, self.weight, self.bias, residual, self.stride, self.padding,
                                                           self.dilation, self.clamp_min, self.clamp_max)
        if self._fits(x, residual) and torch.jit.is_tracing():  # the tracer cannot record the ops below (Scalar?[])
            y = torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups)
            y = y if residual is None else y.add_(residual)
        elif self._fits(x, residual):
            args = (self._weight_for(x), self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups)
            if residual is None:
                y = torch.ops.mkldnn._convolution_pointwise(x, *args, "none", [], None)
            else:
                y = torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, None, [], None)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            if residual is not None:
                y = y + residual
        if self.clamp_min is not None or self.clamp_max is not None:
            y = y.clamp_(self.clamp_min, self.clamp_max)
        return y

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        clamp = f", clamp=({self.clamp_min}, {self.clamp_max})" if self.clamp_min is not None or self.clamp_max is not None else ""
        return (f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}{clamp}")


def to_dense(conv: nn.Module, padding: tuple[int, int] | None) -> DenseConv2d | None:
    """The ``DenseConv2d`` of an exact ``nn.Conv2d`` (float32 on CPU, zero ``padding`` as two ints), else None."""
    if type(conv) is not nn.Conv2d or padding is None or conv.weight.dtype != torch.float32 or conv.weight.device.type != "cpu":
        return None
    if conv.bias is not None and conv.bias.dtype != torch.float32:
        return None
    return DenseConv2d(conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)

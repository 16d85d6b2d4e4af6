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

__all__ = ["has_cuda_kernels", "apply_masks_", "global_magnitude_masks", "gather_channels", "count_to_prune", "compress_weight",
           "stored_channels", "sparse_conv2d", "sparse_linear", "sparse_conv2d_isa", "depthwise_conv2d"]


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


def _pair(v: int | Sequence[int]) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


@torch.no_grad()
def compress_weight(weight: Tensor, block: int = 1, groups: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """A conv ``[out, in/groups, kh, kw]`` or linear ``[out, in]`` weight compressed for ``sparse_conv2d`` /
    ``sparse_linear``: (values float32, taps int32, row_ptr int64). ``block=1``: per output channel, row ``oc``
    owns ``values[row_ptr[oc]:row_ptr[oc + 1]]``; a tap is the nonzero's index within ``weight[oc]`` flattened
    ((ic * kh + ky) * kw + kx). Zeros are dropped (NaN is kept).

    ``block`` = 2, 4 or 8: rows of ``block`` consecutive output channels within each of the ``groups`` groups
    (a group's last row is narrower when ``out / groups`` is not a multiple), values ``[entries, block]``: every
    tap where any channel of the row has a nonzero is stored whole, zeros included (the register-blocked kernel
    loads each activation once for the row's channels)."""
    if block not in (1, 2, 4, 8):
        raise ValueError(f"compress_weight: block must be 1, 2, 4 or 8, got {block}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"compress_weight: groups={groups} must divide the {weight.shape[0]} output channels")
    w = weight.detach().cpu().reshape(weight.shape[0], math.prod(weight.shape[1:]))
    if w.shape[1] >= 2**31:
        raise ValueError(f"compress_weight: {w.shape[1]} weights per output channel do not fit int32 taps")
    if block > 1:  # [groups, rows per group, block, taps], the channels past a group's end zero
        cpg = w.shape[0] // groups
        per_group = -(-cpg // block)
        padded = w.new_zeros(groups, per_group * block, w.shape[1])
        padded[:, :cpg] = w.view(groups, cpg, w.shape[1])
        w = padded.view(groups * per_group, block, w.shape[1]).transpose(1, 2)  # [rows, taps, block]
    kept = w != 0 if block == 1 else (w != 0).any(2)
    rows, cols = kept.nonzero(as_tuple=True)  # row-major: by row, then tap
    row_ptr = torch.zeros(w.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(kept.sum(1), 0, out=row_ptr[1:])
    return w[rows, cols].float().contiguous(), cols.int().contiguous(), row_ptr


def stored_channels(row_ptr: Tensor, block: int, cout: int, groups: int = 1) -> Tensor:
    """The output channel of each stored value of a compressed weight (``values`` flattened), -1 for the
    padding of a group's last, narrower block row."""
    rows = torch.repeat_interleave(torch.arange(row_ptr.numel() - 1), row_ptr.diff())
    if block == 1:
        return rows
    cpg = cout // groups
    per_group = -(-cpg // block)
    first = (rows % per_group) * block
    channel = first[:, None] + torch.arange(block)
    return torch.where(channel < cpg, (rows // per_group)[:, None] * cpg + channel, -1).reshape(-1)


def sparse_conv2d(
    input: Tensor, values: Tensor, taps: Tensor, row_ptr: Tensor, weight_shape: Sequence[int], bias: Tensor | None = None, *,
    residual: Tensor | None = None, stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, clamp_min: float | None = None, clamp_max: float | None = None,
) -> Tensor:
    """``clamp(conv2d(input, W) + bias + residual, clamp_min, clamp_max)`` for the weight ``W`` of shape
    ``weight_shape`` that ``compress_weight`` compressed (float32, CPU; zero padding), per output channel or
    in blocks (``values`` 2-D; compressed with the same ``groups``). ReLU is ``clamp_min=0``, ReLU6 adds
    ``clamp_max=6``. Only the stored weights (a stored block's zeros included) form products: a NaN or Inf
    activation reaches an output through a stored weight (as IEEE arithmetic has it) but not through a
    pruned one, where the dense convolution's 0 * Inf = NaN would. The output is contiguous."""
    return torch.ops.nptm.sparse_conv2d(input, values, taps, row_ptr, [int(x) for x in weight_shape], bias, residual, _pair(stride),
                                        _pair(padding), _pair(dilation), int(groups), clamp_min, clamp_max)


def sparse_linear(
    input: Tensor, values: Tensor, taps: Tensor, row_ptr: Tensor, weight_shape: Sequence[int], bias: Tensor | None = None, *,
    clamp_min: float | None = None, clamp_max: float | None = None,
) -> Tensor:
    """``clamp(linear(input, W, bias), clamp_min, clamp_max)`` for a compressed ``[out, in]`` weight, through
    ``sparse_conv2d``: the rows of ``input`` become the pixels of a 1x1 convolution."""
    out_f, in_f = (int(x) for x in weight_shape)
    if input.shape[-1] != in_f:
        raise ValueError(f"sparse_linear: input has {input.shape[-1]} features but the weight expects {in_f}")
    x = input.reshape(-1, in_f)
    m = x.shape[0]
    x = x.t().contiguous().view(1, in_f, 1, m)  # no branch on m: a trace (nptm.sparse.freeze) runs any batch
    y = torch.ops.nptm.sparse_conv2d(x, values, taps, row_ptr, [out_f, in_f, 1, 1], bias, None, [1, 1], [0, 0], [1, 1], 1,
                                     clamp_min, clamp_max)
    return y.view(out_f, m).t().reshape(*input.shape[:-1], out_f)


def depthwise_conv2d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, *, residual: Tensor | None = None, stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, clamp_min: float | None = None,
    clamp_max: float | None = None,
) -> Tensor:
    """``clamp(conv2d(input, weight, bias, groups=C) + residual, clamp_min, clamp_max)`` for a depthwise ``weight``
    ``[C, 1, kh, kw]`` (channel multiplier 1), float32 on CPU, zero padding; NaN passes the clamp. Any input layout
    is read as it is (no copy); the output is contiguous NCHW. 3x3 and 5x5 kernels at stride 1 or 2 (dilation 1)
    run an unrolled kernel, any other geometry a loop over the taps."""
    return torch.ops.nptm.depthwise_conv2d(input, weight, bias, residual, _pair(stride), _pair(padding), _pair(dilation),
                                           clamp_min, clamp_max)


def sparse_conv2d_isa() -> str:
    """The variant ``sparse_conv2d`` and ``depthwise_conv2d`` run now: "avx512", "avx2" or "portable" (the CPU's
    flags; NPTM_DISABLE_AVX512=1 and NPTM_DISABLE_AVX2=1 force the narrower ones, read on every call)."""
    return str(_C.sparse_conv2d_isa())

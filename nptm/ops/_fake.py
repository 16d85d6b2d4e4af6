"""Fake (meta) implementations so the nptm operators trace under torch.compile.

A list mixing meta and real tensors also lands here: refuse it as the real kernels refuse mixed devices.
"""
import torch


def _one_device(op, *lists):
    devices = {t.device for ts in lists for t in ts}
    if len(devices) > 1:
        raise ValueError(f"{op}: tensors are on different devices: {sorted(map(str, devices))}")


@torch.library.register_fake("nptm::apply_masks_")
def _apply_masks_fake(tensors, masks):
    _one_device("apply_masks_", tensors, masks)
    return None


@torch.library.register_fake("nptm::global_magnitude_masks")
def _global_magnitude_masks_fake(scores, masks, k, use_abs, fraction=None):
    _one_device("global_magnitude_masks", scores, masks)
    return [torch.empty_like(s, dtype=torch.bool, memory_format=torch.contiguous_format) for s in scores]


@torch.library.register_fake("nptm::gather_channels")
def _gather_channels_fake(tensors, dims, indices, synchronous_check=True):
    _one_device("gather_channels", tensors, indices)
    out = []
    for t, d, i in zip(tensors, dims, indices):
        shape = list(t.shape)
        shape[d] = i.numel()
        out.append(t.new_empty(shape))
    return out


@torch.library.register_fake("nptm::sparse_conv2d")
def _sparse_conv2d_fake(input, values, taps, row_ptr, weight_shape, bias=None, residual=None, stride=(1, 1), padding=(0, 0),
                        dilation=(1, 1), groups=1, clamp_min=None, clamp_max=None):
    n, _, h, w = input.shape
    cout, _, kh, kw = weight_shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return input.new_empty((n, cout, ho, wo))


@torch.library.register_fake("nptm::depthwise_conv2d")
def _depthwise_conv2d_fake(input, weight, bias=None, residual=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                           clamp_min=None, clamp_max=None):
    n, c, h, w = input.shape
    kh, kw = weight.shape[2:]
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return input.new_empty((n, c, ho, wo))

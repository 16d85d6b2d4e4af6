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

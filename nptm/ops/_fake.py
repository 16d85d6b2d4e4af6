"""Fake (meta) implementations so the nptm operators trace under torch.compile."""
import torch


@torch.library.register_fake("nptm::apply_masks_")
def _apply_masks_fake(tensors, masks):
    return None


@torch.library.register_fake("nptm::global_magnitude_masks")
def _global_magnitude_masks_fake(scores, masks, k, use_abs):
    return [torch.empty_like(s, dtype=torch.bool, memory_format=torch.contiguous_format) for s in scores]


@torch.library.register_fake("nptm::gather_channels")
def _gather_channels_fake(tensors, dims, indices):
    out = []
    for t, d, i in zip(tensors, dims, indices):
        shape = list(t.shape)
        shape[d] = i.numel()
        out.append(t.new_empty(shape))
    return out

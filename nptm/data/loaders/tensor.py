"""Batches of in-memory tensors already on the device, shuffled and sharded deterministically."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from nptm.data.registry import DataError
from nptm.utils.seeding import mix_seed


class TensorLoader:
    """Batches of an in-memory (inputs, labels) pair, already on the device.

    Shuffled deterministically per (seed, stream, epoch) via ``set_epoch``: ``stream`` separates
    phases of a study that reuse epoch numbers. ``transform(x, generator)`` runs on each batch
    (augmentation on the device).

    With ``world_size`` W > 1, ``batch_size`` is the per-rank batch b: step k's global batch is the
    k-th run of W*b samples of the epoch's permutation (the same on every rank, and the same as one
    process with batch W*b), and rank r takes every W-th sample of it starting at r. ``transform`` is
    then called as ``transform(x, generator, share=(r, W, n))``: x holds rows r, r+W, ... of an n-sample
    global batch, so random augmentation can draw for all n and keep its rows, as one process would.
    Evaluation loaders (``shuffle=False``) cover every sample once (uneven shares); a training epoch
    drops its last global batch only if it has fewer samples than ranks (every rank must step).
    """

    def __init__(
        self,
        inputs: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        channels_last: bool = False,
    ):
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.transform, self.channels_last = transform, channels_last
        self.epoch, self.stream = 0, 0

    def set_epoch(self, epoch: int, stream: int = 0) -> None:
        self.epoch, self.stream = epoch, stream

    def _used(self) -> int:
        """Samples used per epoch (all ranks)."""
        n, w = len(self.labels), self.world_size
        tail = n % (self.batch_size * w)
        return n - tail if self.shuffle and 0 < tail < w else n

    def global_batch(self, step: int) -> int:
        """Samples in step ``step``'s batch over all ranks."""
        size = self.batch_size * self.world_size
        return min(size, self._used() - step * size)

    def __len__(self) -> int:
        size = self.batch_size * self.world_size
        if self.shuffle or self.world_size == 1:
            return math.ceil(self._used() / size)
        return math.ceil(max(len(self.labels) - self.rank, 0) / size)  # steps whose batch has a row for this rank

    def __iter__(self):
        n, device, w = self._used(), self.labels.device, self.world_size
        seed = mix_seed(self.seed, self.stream, self.epoch)
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed)) if self.shuffle \
            else torch.arange(len(self.labels))
        order = order[:n].to(device)
        gen = torch.Generator(device=device).manual_seed(seed) if self.transform else None
        size = self.batch_size * w
        for start in range(0, n, size):
            rows = order[start : start + size]
            idx = rows[self.rank :: w] if w > 1 else rows
            if len(idx) == 0:
                break
            x = self.inputs[idx]
            if self.transform is not None:
                x = self.transform(x, gen) if w == 1 else self.transform(x, gen, share=(self.rank, w, len(rows)))
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]

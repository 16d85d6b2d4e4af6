"""Transforms shared by every loader: normalisation on the device, CIFAR's batch augmentation, and the
progressive-resizing schedule of the training resolution."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nptm.data.constants import CIFAR_PAD


class DeviceNormalize:
    """uint8 N,C,H,W batch -> (x/255 - mean)/std on ``device`` in ``dtype``, arithmetic in float32."""

    def __init__(self, mean, std, device, dtype=torch.float32, channels_last: bool = False):
        self.device, self.dtype, self.channels_last = torch.device(device), dtype, channels_last
        std255 = torch.tensor(std, dtype=torch.float32) * 255
        self.scale = (1 / std255).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) * 255 / std255).view(1, -1, 1, 1).to(self.device)

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().mul_(self.scale).add_(self.shift).to(self.dtype)


def augment_batch(x: Tensor, generator: torch.Generator, share: tuple[int, int, int] | None = None,
                  pad: int = CIFAR_PAD) -> Tensor:
    """Pad-``pad`` (zeros) random crop to the input size and random horizontal flip of a uint8 N,C,H,W batch.

    ``share=(r, w, total)``: x holds rows r, r+w, ... of a ``total``-sample batch split over ranks; the
    random draws are made for all ``total`` rows and sliced, so the ranks together augment exactly
    as one process augments the whole batch."""
    n, _, h, w = x.shape
    start, step, total = share or (0, 1, n)
    pick = slice(start, None, step)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (total, 1), device=x.device, generator=generator)[pick]
    dx = torch.randint(0, 2 * pad + 1, (total, 1), device=x.device, generator=generator)[pick]
    rows = dy + torch.arange(h, device=x.device)
    cols = dx + torch.arange(w, device=x.device)
    flip = (torch.rand(total, 1, device=x.device, generator=generator) < 0.5)[pick]
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # N,H,W,C -> N,C,H,W


@dataclass(frozen=True)
class ProgressiveResize:
    """ffcv-imagenet resolution schedule: ``min_res`` up to epoch ``start_ramp``, then a linear ramp
    (rounded to multiples of ``step``) reaching ``max_res`` at epoch ``end_ramp``."""

    min_res: int = 160
    max_res: int = 192
    start_ramp: int = 11
    end_ramp: int = 13
    step: int = 32

    def __call__(self, epoch: int) -> int:
        if epoch <= self.start_ramp:
            return self.min_res
        if epoch >= self.end_ramp:
            return self.max_res
        res = np.interp(epoch, [self.start_ramp, self.end_ramp], [self.min_res, self.max_res])
        return int(round(res / self.step)) * self.step

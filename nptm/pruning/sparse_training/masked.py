"""The reparametrization DPF and DNW share: the forward pass sees w * m (m a bool buffer), the gradient of the
masked weights reaches every entry of the dense w (straight through the mask), and m is a global magnitude
top-k of the dense weights recomputed on the method's schedule."""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from nptm.pruning.sparse_training.base import SparseTraining, magnitude_masks


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, mask: Tensor) -> Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class MaskedWeight(nn.Module):
    """Parametrization w -> w * mask whose gradient is passed to all of w."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        return _StraightThrough.apply(weight, self.mask)


@dataclasses.dataclass
class MaskedTraining(SparseTraining):
    def _setup(self, model: nn.Module) -> None:
        self.parametrize(model, MaskedWeight)

    @torch.no_grad()
    def update_masks(self, model: nn.Module, sparsity: float) -> None:
        """Masks from scratch: the round(sparsity * N) smallest dense |w| are masked, every other entry is not."""
        new = magnitude_masks(self.dense(model), round(sparsity * self.numel))
        for p, m in zip(self.parametrizations(model), new):
            p.mask.copy_(m)

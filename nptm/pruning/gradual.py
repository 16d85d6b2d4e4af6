"""GMP (Zhu & Gupta 2017, "To prune, or not to prune"): gradual magnitude pruning during training.

At iterations t0 + j * dt (j = 1..n, dt = (t_end - t0) / n) the sparsity becomes
s_j = s_f * (1 - (1 - j / n)^3) (the cubic ramp from s_i = 0), with one global magnitude mask over the
alive weights; pruned weights stay pruned, and training goes on with the final mask after t_end.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nptm import ops
from nptm.pruning.masks import Masks, prunable_weights


@dataclass(frozen=True)
class GMPRamp:
    final_sparsity: float
    start: int  # t0, in iterations
    end: int  # t0 + n * dt
    steps: int  # n

    def __post_init__(self):
        if not 0 <= self.final_sparsity < 1 or self.steps < 1 or not 0 <= self.start <= self.end:
            raise ValueError(f"GMP needs a sparsity in [0, 1), steps >= 1 and 0 <= start <= end, got {self}")

    @classmethod
    def over(cls, final_sparsity: float, total_iters: int, start_frac: float, end_frac: float,
             steps: int | None = None, iters_per_epoch: int = 1) -> "GMPRamp":
        """The ramp from ``start_frac`` to ``end_frac`` of ``total_iters``; ``steps`` defaults to one per epoch."""
        start, end = round(start_frac * total_iters), round(end_frac * total_iters)
        n = steps or max(1, round((end - start) / max(iters_per_epoch, 1)))
        return cls(final_sparsity, start, end, n)

    def sparsity_at(self, iteration: int) -> float | None:
        """The target sparsity when ``iteration`` steps have been taken, or None off the pruning steps."""
        for j in range(1, self.steps + 1):
            if iteration == self.start + round(j * (self.end - self.start) / self.steps):
                return self.final_sparsity * (1 - (1 - j / self.steps) ** 3)
        return None


@torch.no_grad()
def prune_to_sparsity(model: nn.Module, masks: Masks, sparsity: float, *, include_linear: bool = False,
                      optimizer: torch.optim.Optimizer | None = None) -> None:
    """Grow ``masks`` IN PLACE to round(sparsity * N) pruned weights by one global magnitude top-k over the
    alive weights, and apply them to the model (and the optimizer's buffers)."""
    params = prunable_weights(model, include_linear)
    names = list(params)
    total = sum(params[n].numel() for n in names)
    k = max(0, round(sparsity * total) - (total - masks.nonzero()))
    new = ops.global_magnitude_masks([params[n] for n in names], k, masks=[masks[n] for n in names])
    for n, m in zip(names, new):
        masks[n].copy_(m)
    masks.apply(model, optimizer)

"""GMP (Zhu & Gupta 2017, "To prune, or not to prune"): gradual magnitude pruning during training.

At iterations t0 + round(j * (t_end - t0) / n) (j = 1..n) the sparsity becomes s_j = s_f * (1 - (1 - j / n)^3)
(the cubic ramp from s_i = 0), with one global magnitude mask over the alive weights; pruned weights stay pruned,
and training goes on with the final mask after t_end. Every step falls on its own iteration >= 1 (a window needs
at least n iterations), and the last one, at t_end, prunes to s_f exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from nptm.pruning.masks import Masks, prunable_weights
from nptm.pruning.patterns import Blocks, as_pattern, layer_groups


@dataclass(frozen=True)
class GMPRamp:
    final_sparsity: float
    start: int  # t0, in iterations
    end: int  # t0 + n * dt
    steps: int  # n

    def __post_init__(self):
        if not 0 <= self.final_sparsity < 1 or self.steps < 1 or not 0 <= self.start <= self.end:
            raise ValueError(f"GMP needs a sparsity in [0, 1), steps >= 1 and 0 <= start <= end, got {self}")
        if self.end - self.start < self.steps:
            raise ValueError(f"the GMP window (iterations {self.start} to {self.end}) has {self.end - self.start} "
                             f"iterations but needs at least one per pruning step ({self.steps})")

    @classmethod
    def over(cls, final_sparsity: float, total_iters: int, start_frac: float, end_frac: float,
             steps: int | None = None, iters_per_epoch: int = 1) -> "GMPRamp":
        """The ramp from ``start_frac`` to ``end_frac`` of ``total_iters``; ``steps`` defaults to one per epoch
        (at least one). ValueError for a window with fewer iterations than steps (an empty one included)."""
        start, end = round(start_frac * total_iters), round(end_frac * total_iters)
        n = steps or max(1, round((end - start) / max(iters_per_epoch, 1)))
        return cls(final_sparsity, start, end, n)

    @cached_property
    def iterations(self) -> tuple[int, ...]:
        """The iteration of each pruning step (distinct and increasing; the last is ``end``)."""
        return tuple(self.start + round(j * (self.end - self.start) / self.steps) for j in range(1, self.steps + 1))

    def sparsity_of_step(self, j: int) -> float:
        """s_j, with s_n = final_sparsity exactly."""
        return self.final_sparsity if j == self.steps else self.final_sparsity * (1 - (1 - j / self.steps) ** 3)

    def sparsity_at(self, iteration: int) -> float | None:
        """The target sparsity when ``iteration`` steps have been taken, or None off the pruning steps."""
        its = self.iterations
        if iteration in its:
            return self.sparsity_of_step(its.index(iteration) + 1)
        return None

    def level_at(self, iteration: int) -> float:
        """The sparsity in force after ``iteration`` steps: that of the last pruning step at or before it (0 before
        the first)."""
        done = sum(1 for t in self.iterations if t <= iteration)
        return self.sparsity_of_step(done) if done else 0.0


@torch.no_grad()
def prune_to_sparsity(model: nn.Module, masks: Masks, sparsity: float, *, include_linear: bool = False,
                      optimizer: torch.optim.Optimizer | None = None, pattern: str | None = None) -> None:
    """Grow ``masks`` IN PLACE to round(sparsity * N) pruned weights by one global magnitude top-k over the
    alive weights, and apply them to the model (and the optimizer's buffers). ``pattern`` "Kx1": N counts the
    blocks of ``nptm.pruning.patterns`` and whole blocks are pruned."""
    params = prunable_weights(model, include_linear)
    names = list(params)
    pat, old = as_pattern(pattern), [masks[n] for n in names]
    if not isinstance(pat, Blocks):
        raise ValueError(f"GMP prunes single weights or Kx1 blocks, not the pattern {pat.name!r}")
    groups = layer_groups(model, names)
    if pat.k == 1:
        total, alive = sum(params[n].numel() for n in names), masks.nonzero()
    else:
        total, alive = pat.count(old, groups)
    k = max(0, round(sparsity * total) - (total - alive))
    new = pat.masks([params[n] for n in names], k, scores=None, old=old, groups=groups)
    for n, m in zip(names, new):
        masks[n].copy_(m)
    masks.apply(model, optimizer)

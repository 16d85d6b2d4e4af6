"""Sparsity patterns: which weights an unstructured pruner removes together. One notion for every masking pruner
(``prune_unstructured(..., pattern=)``, IMP/BIMP cycles, GMP, the sparse-training methods' final projection):

- ``"1x1"`` (or None): single weights, the plain unstructured top-k;
- ``"Kx1"`` (K = 2, 4, 8, ...): blocks of K consecutive output channels at the same input channel and tap, what
  register-blocked sparse kernels load one activation for (XNNPACK's and Intel's 4x1). A block's score is the sum of
  the criterion's scores of its alive entries; one global top-k over the blocks (``ops.global_magnitude_masks`` on
  the block scores) prunes k = round(amount * alive blocks) whole blocks (an int amount: that many), ties by
  (layer, block row, input position), so a layer's share of pruned blocks follows its scores as with single weights.
  Blocks run along dim 0 of the weight (a conv's or linear's output channels) and restart at each group of a
  grouped conv, so a block never spans two groups (a depthwise conv's blocks are its single channels). When a
  group's channel count is not a multiple of K, its last Cout % K channels form a shorter block, scored by its mean
  per channel times K (as a full block of such entries would be) and counted as one block. A block is alive while
  any of its entries is; pruned entries stay pruned (the new masks are ANDed with the old ones);
- ``"N:M"``: N:M semi-structured masks (``nptm.pruning.semi_structured``; the amount does not apply).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nptm import ops
from nptm.pruning.masks import clean_name, unwrap
from nptm.pruning.semi_structured import n_m_mask, parse_pattern

UNSTRUCTURED = "1x1"


def _rows(t: Tensor) -> Tensor:
    """``t`` as [dim 0, the rest] (a 1-D tensor: one column)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern; ``masks`` turns per-weight scores into bool masks (True = kept)."""

    name: str

    def masks(self, weights: Sequence[Tensor], amount: float | int, *, scores: Sequence[Tensor] | None,
              old: Sequence[Tensor], groups: Sequence[int], per_layer: bool = False) -> list[Tensor]:
        """New masks of ``weights``: prune ``amount`` of the alive units (a fraction, or a count) with the lowest
        ``scores`` (per weight; None: |w|), one top-k over all layers or, ``per_layer``, one per layer; ``old``
        masks stay pruned; ``groups``: each weight's conv groups."""
        raise NotImplementedError


@dataclass(frozen=True)
class Blocks(Pattern):
    k: int = 1

    def _shape(self, rows: int, groups: int) -> tuple[int, int, int]:
        """(groups, channels per group, zero rows padding each group to a multiple of K)."""
        g = groups if groups > 0 and rows % groups == 0 else 1
        per = rows // g
        return g, per, -per % self.k

    def blocked(self, t: Tensor, groups: int) -> Tensor:
        """``t`` [rows, ...] as [block rows, K, rest], each group's channels zero-padded to a multiple of K."""
        t2 = _rows(t)
        g, per, pad = self._shape(t2.shape[0], groups)
        t3 = t2.reshape(g, per, t2.shape[1])
        if pad:
            t3 = torch.cat([t3, t3.new_zeros(g, pad, t2.shape[1])], 1)
        return t3.reshape(-1, self.k, t2.shape[1])

    def unblocked(self, kept: Tensor, like: Tensor, groups: int) -> Tensor:
        """Block masks [block rows, rest] back to one entry per weight of ``like``."""
        g, per, pad = self._shape(like.shape[0], groups)
        rows = kept.unsqueeze(1).expand(-1, self.k, -1).reshape(g, per + pad, kept.shape[1])[:, :per]
        return rows.reshape(like.shape)

    def block_scores(self, scores: Tensor, alive: Tensor, groups: int) -> tuple[Tensor, Tensor]:
        """(float64 block scores [block rows, in], block alive [block rows, in]): the sum of the alive entries'
        scores, a group's shorter tail block scaled by K / its size."""
        sums = self.blocked(scores.double().masked_fill(~alive, 0.0), groups).sum(1)
        g, per, pad = self._shape(scores.shape[0], groups)
        if pad:
            sums.view(g, -1, sums.shape[1])[:, -1] *= self.k / (self.k - pad)
        return sums, self.blocked(alive, groups).any(1)

    def count(self, masks: Sequence[Tensor], groups: Sequence[int]) -> tuple[int, int]:
        """(blocks in all, blocks alive) of these masks."""
        live = [self.blocked(m, g).any(1) for m, g in zip(masks, groups)]
        return sum(b.numel() for b in live), sum(int(b.sum()) for b in live)

    def masks(self, weights, amount, *, scores, old, groups, per_layer=False):
        if scores is None:
            scores = [w.detach().abs() for w in weights] if self.k > 1 else None
        if self.k == 1:  # the kernel's own path (|w| when no scores)
            if per_layer:
                return [ops.global_magnitude_masks([w], amount, masks=[m], scores=None if scores is None else [s])[0]
                        for w, m, s in zip(weights, old, scores or [None] * len(weights))]
            return ops.global_magnitude_masks(weights, amount, masks=old, scores=scores)
        sums, live = zip(*(self.block_scores(s, m, g) for s, m, g in zip(scores, old, groups)))
        if per_layer:
            kept = [ops.global_magnitude_masks([s], amount, masks=[a], scores=[s])[0] for s, a in zip(sums, live)]
        else:
            kept = ops.global_magnitude_masks(list(sums), amount, masks=list(live), scores=list(sums))
        return [self.unblocked(b, m, g) & m for b, m, g in zip(kept, old, groups)]


@dataclass(frozen=True)
class NM(Pattern):
    n: int = 2
    m: int = 4

    def masks(self, weights, amount, *, scores, old, groups, per_layer=False):
        scores = scores if scores is not None else [w.detach().abs() for w in weights]
        return [n_m_mask(s, self.n, self.m, o) for s, o in zip(scores, old)]


_BLOCKS = re.compile(r"(\d+)x1")


def as_pattern(pattern: str | Pattern | None) -> Pattern:
    """``None``/"1x1" -> single weights, "Kx1" -> blocks of K output channels, "N:M" -> N:M; ValueError otherwise."""
    if isinstance(pattern, Pattern):
        return pattern
    text = UNSTRUCTURED if pattern is None else str(pattern).strip()
    if ":" in text:
        n, m = parse_pattern(text)
        return NM(text, n, m)
    match = _BLOCKS.fullmatch(text)
    if match is None or int(match[1]) < 1:
        raise ValueError(f"unknown sparsity pattern {pattern!r}: Kx1 (blocks of K output channels at one input "
                         f"weight: 1x1 single weights, 2x1, 4x1, 8x1) or N:M (2:4)")
    return Blocks(f"{int(match[1])}x1", int(match[1]))


def layer_groups(model: nn.Module, names: Sequence[str]) -> list[int]:
    """The ``groups`` of the module holding each named weight (1 for anything but a grouped conv)."""
    owners = {clean_name(n): m for n, m in unwrap(model).named_modules()}
    return [owner.groups if isinstance(owner := owners.get(n.rpartition(".")[0]), nn.modules.conv._ConvNd) else 1
            for n in names]

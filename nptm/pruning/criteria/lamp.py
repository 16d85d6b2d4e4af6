"""LAMP (Lee et al., ICLR 2021): layer-adaptive magnitude scores for one global top-k.

In each layer the weights are sorted by |w| ascending (ties by flat index) and
score(u) = w_u^2 / sum_{v >= u} w_v^2, so every layer's largest weight scores 1 and survives.
"""
from __future__ import annotations

import torch

from nptm.pruning.criteria.base import CRITERIA, Criterion, check_finite


def lamp_scores(w: torch.Tensor) -> torch.Tensor:
    """LAMP scores of one layer's weights, float64, shaped like ``w`` (0 where the remaining norm is 0)."""
    sq = w.detach().to(torch.float64).flatten().square()
    order = torch.sort(sq, stable=True).indices  # ascending; ties keep the flat order
    sorted_sq = sq[order]
    tail = sorted_sq.flip(0).cumsum(0).flip(0)  # sum over v >= u
    out = torch.empty_like(sq)
    out[order] = torch.where(tail > 0, sorted_sq / tail.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return out.reshape(w.shape)


@CRITERIA.register("lamp", position=1)
class LAMP(Criterion):
    def scores(self, model, params, *, loader=None, generator=None):
        check_finite(params)
        return {n: lamp_scores(w) for n, w in params.items()}

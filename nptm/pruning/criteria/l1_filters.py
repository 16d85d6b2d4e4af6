"""PFEC (Li et al. 2016): a filter's score is the L1 norm of its weights, sum |w| over (in, kh, kw)."""
from __future__ import annotations

import torch

from nptm.pruning.criteria.base import CRITERIA, Criterion, check_finite


@CRITERIA.register("l1_filters", position=3)
class L1Filters(Criterion):
    structured = True

    def scores(self, model, params, *, loader=None, generator=None):
        check_finite(params)
        return {n: w.detach().to(torch.float64).abs().reshape(w.shape[0], -1).sum(1) for n, w in params.items()}

"""L2 filter norm (SFP's criterion, He et al. 2018): sqrt of sum w^2 over (in, kh, kw) of each output filter."""
from __future__ import annotations

import torch

from nptm.pruning.criteria.base import CRITERIA, Criterion, check_finite


@CRITERIA.register("l2_filters", position=4)
class L2Filters(Criterion):
    structured = True

    def scores(self, model, params, *, loader=None, generator=None):
        check_finite(params)
        return {n: w.detach().to(torch.float64).reshape(w.shape[0], -1).norm(dim=1) for n, w in params.items()}

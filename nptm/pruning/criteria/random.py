"""Random scores: the same counts as a methodical criterion, chosen uniformly (the papers' random baselines)."""
from __future__ import annotations

import torch

from nptm.pruning.criteria.base import CRITERIA, Criterion, uniform_scores


@CRITERIA.register("random", position=2)
class RandomWeights(Criterion):
    random = True

    def scores(self, model, params, *, loader=None, generator=None):
        return {n: uniform_scores(w.shape, w, generator) for n, w in params.items()}


@CRITERIA.register("random_filters", position=2.5)
class RandomFilters(Criterion):
    structured = True
    random = True

    def scores(self, model, params, *, loader=None, generator=None):
        return {n: uniform_scores((w.shape[0],), w, generator, torch.float64) for n, w in params.items()}

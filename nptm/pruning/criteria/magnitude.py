"""Magnitude (MWP): the score of a weight is |w|."""
from __future__ import annotations

from nptm.pruning.criteria.base import CRITERIA, Criterion


@CRITERIA.register("magnitude", position=0)
class Magnitude(Criterion):
    def scores(self, model, params, *, loader=None, generator=None):
        return {n: w.detach().abs() for n, w in params.items()}

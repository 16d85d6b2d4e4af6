"""ALLR: LLR with its peak discounted by d, and d itself (Zimmer, Spiegel & Pokutta 2023)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from nptm.schedules.retrain import SCHEDULES, Schedule, warmup_linear_decay


@torch.no_grad()
def allr_scale(
    before: Sequence[Tensor], after: Sequence[Tensor], pruned_fraction: float, retrain_epochs: float, total_epochs: float
) -> tuple[float, float, float]:
    """(d, d1, d2): d1 = ||theta - theta_p||_2 / (||theta||_2 * sqrt(s)), d2 = T_rt / T, d = min(1, max(d1, d2)).

    ``before``/``after`` are aligned weights before and after this pruning step, ``pruned_fraction`` s is
    the fraction of the remaining weights pruned in this step. d1 is 0 when s or ||theta|| is 0.
    Norms accumulate in float64.
    """
    if len(before) != len(after):
        raise ValueError(f"allr_scale: {len(before)} tensors before pruning but {len(after)} after")
    if not 0 <= pruned_fraction <= 1:
        raise ValueError(f"pruned_fraction must be in [0, 1], got {pruned_fraction}")
    if not total_epochs > 0 or not retrain_epochs >= 0:
        raise ValueError(f"need total_epochs > 0 and retrain_epochs >= 0, got {total_epochs}, {retrain_epochs}")
    for i, (b, a) in enumerate(zip(before, after)):
        if b.shape != a.shape:
            raise ValueError(f"allr_scale: tensor {i} has shape {tuple(b.shape)} before but {tuple(a.shape)} after")
    if before:
        sq = torch.stack([torch.stack([b.double().square().sum(), (b.double() - a.to(b.device).double()).square().sum()]) for b, a in zip(before, after)])
        norm_sq, diff_sq = sq.sum(0).tolist()
    else:
        norm_sq = diff_sq = 0.0
    d1 = math.sqrt(diff_sq) / (math.sqrt(norm_sq) * math.sqrt(pruned_fraction)) if norm_sq > 0 and pruned_fraction > 0 else 0.0
    d2 = retrain_epochs / total_epochs
    return min(1.0, max(d1, d2)), d1, d2


@SCHEDULES.register("ALLR")
def adaptive_linear_restart(o, n, ipe, t_rt, *, warmup_frac, peak_scale, **_) -> Schedule:
    """ALLR: LLR with peak d * eta_max, d = peak_scale (compute it with ``allr_scale``)."""
    if peak_scale is None:
        raise ValueError("ALLR needs its peak factor d: compute it with nptm.schedules.allr_scale(before, after, ...)")
    if not 0 < peak_scale <= 1:
        raise ValueError(f"ALLR peak_scale must be in (0, 1], got {peak_scale}")
    return warmup_linear_decay("ALLR", peak_scale * o.eta_max, n, warmup_frac)

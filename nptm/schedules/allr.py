"""ALLR: LLR with its peak discounted by d, and d itself (Zimmer, Spiegel & Pokutta 2023)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from nptm.schedules.retrain import Schedule, retrain_schedule, warmup_linear_decay


@torch.no_grad()
def norm_drop(before: Sequence[Tensor], after: Sequence[Tensor], pruned_fraction: float) -> float:
    """ALLR's d1 = ||theta - theta_p||_2 / (||theta||_2 * sqrt(s)) for aligned weights before and after one pruning
    step, s the fraction of the remaining weights pruned in it; 0 when s or ||theta|| is 0. Float64 sums.

    Where a pair differs in shape (channels physically removed, the kept ones unchanged),
    ||theta - theta_p||^2 is ||theta||^2 - ||theta_p||^2."""
    if len(before) != len(after):
        raise ValueError(f"allr_scale: {len(before)} tensors before pruning but {len(after)} after")
    if not 0 <= pruned_fraction <= 1:
        raise ValueError(f"pruned_fraction must be in [0, 1], got {pruned_fraction}")
    if before and all(b.shape == a.shape for b, a in zip(before, after)):
        sq = torch.stack([torch.stack([b.double().square().sum(), (b.double() - a.to(b.device).double()).square().sum()])
                          for b, a in zip(before, after)])
        norm_sq, diff_sq = sq.sum(0).tolist()
    elif before:
        norm_sq = sum(float(b.double().square().sum()) for b in before)
        diff_sq = max(norm_sq - sum(float(a.double().square().sum()) for a in after), 0.0)
    else:
        norm_sq = diff_sq = 0.0
    return math.sqrt(diff_sq) / (math.sqrt(norm_sq) * math.sqrt(pruned_fraction)) \
        if norm_sq > 0 and pruned_fraction > 0 else 0.0


def allr_factor(d1: float, retrain_epochs: float, total_epochs: float) -> tuple[float, float]:
    """(d, d2): d2 = T_rt / T, d = min(1, max(d1, d2)): ALLR's peak factor for a retraining budget."""
    if not total_epochs > 0 or not retrain_epochs >= 0:
        raise ValueError(f"need total_epochs > 0 and retrain_epochs >= 0, got {total_epochs}, {retrain_epochs}")
    d2 = retrain_epochs / total_epochs
    return min(1.0, max(d1, d2)), d2


def allr_scale(
    before: Sequence[Tensor], after: Sequence[Tensor], pruned_fraction: float, retrain_epochs: float, total_epochs: float
) -> tuple[float, float, float]:
    """(d, d1, d2) of ALLR for one pruning step (``norm_drop``) and a retraining budget (``allr_factor``)."""
    d1 = norm_drop(before, after, pruned_fraction)
    d, d2 = allr_factor(d1, retrain_epochs, total_epochs)
    return d, d1, d2


@retrain_schedule("ALLR", position=5, uses_d=True)
def adaptive_linear_restart(o, n, iters_per_epoch, t_rt, *, warmup_frac, peak_scale, **_) -> Schedule:
    """ALLR: LLR with peak d * eta_max, d = peak_scale (compute it with ``allr_scale``)."""
    if peak_scale is None:
        raise ValueError("ALLR needs its peak factor d: compute it with nptm.schedules.allr_scale(before, after, ...)")
    if not 0 < peak_scale <= 1:
        raise ValueError(f"ALLR peak_scale must be in (0, 1], got {peak_scale}")
    return warmup_linear_decay("ALLR", peak_scale * o.eta_max, n, warmup_frac)

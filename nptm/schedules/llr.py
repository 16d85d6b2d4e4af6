"""LLR: linear learning-rate restarting (Zimmer, Spiegel & Pokutta 2023)."""
from __future__ import annotations

from nptm.schedules.retrain import Schedule, warmup_linear_decay, retrain_schedule


@retrain_schedule("LLR", position=4)
def linear_restart(o, n, iters_per_epoch, t_rt, *, warmup_frac, **_) -> Schedule:
    """LLR: W = warmup_frac * N; eta_max * it / W for it < W, then eta_max * (N - it) / (N - W)."""
    return warmup_linear_decay("LLR", o.eta_max, n, warmup_frac)

"""LRW: learning-rate rewinding (replay the end of the original schedule)."""
from __future__ import annotations

from nptm.schedules.retrain import SCHEDULES, Schedule


@SCHEDULES.register("LRW")
def rewind(o, n, ipe, t_rt, **_) -> Schedule:
    """LRW: eta_orig(T - T_rt + it / iters_per_epoch), replaying the last T_rt epochs (needs T_rt <= T)."""
    if t_rt > o.T:
        raise ValueError(f"LRW replays the last {t_rt} epochs but the original schedule has only {o.T}")
    return Schedule("LRW", n, lambda it: o.lr_at(o.T - t_rt + it / ipe))

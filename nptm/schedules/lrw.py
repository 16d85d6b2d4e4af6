"""LRW: learning-rate rewinding (replay the end of the original schedule)."""
from __future__ import annotations

from nptm.schedules.retrain import Schedule, retrain_schedule


def _longer_than_original(t_rt: float, total: float) -> str | None:
    return f"LRW replays the last {t_rt:g} epochs of an original schedule of only {total:g}" if t_rt > total else None


@retrain_schedule("LRW", position=1, check=_longer_than_original)
def rewind(o, n, iters_per_epoch, t_rt, **_) -> Schedule:
    """LRW: eta_orig(T - T_rt + it / iters_per_epoch), replaying the last T_rt epochs (needs T_rt <= T)."""
    problem = _longer_than_original(t_rt, o.T)
    if problem:
        raise ValueError(problem)
    return Schedule("LRW", n, lambda it: o.lr_at(o.T - t_rt + it / iters_per_epoch))

"""none: no retraining (report the pruned accuracy)."""
from __future__ import annotations

from nptm.schedules.retrain import SCHEDULES, Schedule


@SCHEDULES.register("none")
def no_retraining(o, n, ipe, t_rt, **_) -> Schedule:
    """none: no retraining, 0 iterations."""
    return Schedule("none", 0, lambda it: 0.0)

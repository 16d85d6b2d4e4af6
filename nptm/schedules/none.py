"""none: no retraining (report the pruned accuracy)."""
from __future__ import annotations

from nptm.schedules.retrain import Schedule, retrain_schedule


@retrain_schedule("none", position=6, restarts=False, retrains=False, default=False)
def no_retraining(o, n, iters_per_epoch, t_rt, **_) -> Schedule:
    """none: no retraining, 0 iterations."""
    return Schedule("none", 0, lambda it: 0.0)

"""FT: fine-tune at the original schedule's last lr."""
from __future__ import annotations

from nptm.schedules.retrain import Schedule, retrain_schedule


@retrain_schedule("FT", position=0, restarts=False)
def fine_tune(o, n, iters_per_epoch, t_rt, **_) -> Schedule:
    """FT: constant eta_min."""
    return Schedule("FT", n, lambda it: o.eta_min)

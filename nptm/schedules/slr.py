"""SLR: scaled learning-rate restarting (warm-up, then the original schedule compressed)."""
from __future__ import annotations

from nptm.schedules.retrain import Schedule, cos_anneal, retrain_schedule


@retrain_schedule("SLR", position=2)
def scaled_restart(o, n, iters_per_epoch, t_rt, *, warmup_frac, **_) -> Schedule:
    """SLR: W = warmup_frac * N; it < W: cosine ramp eta_min -> eta_max over it / W (the reference
    code's 'cos' warm-up); then the original's decay part at fraction (it - W) / (N - W)."""
    if warmup_frac == 0:
        raise ValueError("SLR needs warmup_frac > 0")
    w = warmup_frac * n

    def lr(it: int) -> float:
        if it < w:
            return cos_anneal(o.eta_min, o.eta_max, it / w)
        return o.lr_at_fraction((it - w) / (n - w))

    return Schedule("SLR", n, lr)

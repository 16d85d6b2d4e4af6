"""CLR: cyclic (1-cycle) learning-rate restarting, as torch's OneCycleLR in the reference code."""
from __future__ import annotations

from nptm.schedules.retrain import Schedule, cos_anneal, retrain_schedule

MOMENTUM_HIGH, MOMENTUM_LOW = 0.95, 0.85  # OneCycleLR's max_momentum / base_momentum
CLR_DIV_FACTOR = CLR_FINAL_DIV_FACTOR = 100.0  # the reference code's OneCycleLR arguments


@retrain_schedule("CLR", position=3)
def one_cycle(o, n, iters_per_epoch, t_rt, *, warmup_frac, cycle_momentum, **_) -> Schedule:
    """CLR: torch's OneCycleLR(max_lr=eta_max, total_steps=N, pct_start=warmup_frac, div_factor=100,
    final_div_factor=100, anneal_strategy='cos'). With E1 = warmup_frac * N - 1:
    it <= E1: cos-anneal eta_max/100 -> eta_max over pct = it / E1; else cos-anneal eta_max -> eta_max/1e4
    over pct = (it - E1) / (N - 1 - E1). eta_max/100 is eta_min for both presets. Momentum (only with
    cycle_momentum) follows the same phases 0.95 -> 0.85 -> 0.95."""
    if warmup_frac == 0:
        raise ValueError("CLR needs warmup_frac > 0")
    peak = o.eta_max
    start, end = peak / CLR_DIV_FACTOR, peak / CLR_DIV_FACTOR / CLR_FINAL_DIV_FACTOR
    e1, e2 = float(warmup_frac * n) - 1, n - 1

    def phase(it: int) -> tuple[int, float]:
        if it <= e1:
            return 0, it / e1 if e1 > 0 else 1.0  # torch divides 0 by 0 here (N * warmup_frac == 1)
        return 1, (it - e1) / (e2 - e1)

    def lr(it: int) -> float:
        p, pct = phase(it)
        return cos_anneal(start, peak, pct) if p == 0 else cos_anneal(peak, end, pct)

    def momentum(it: int) -> float:
        p, pct = phase(it)
        return cos_anneal(MOMENTUM_HIGH, MOMENTUM_LOW, pct) if p == 0 else cos_anneal(MOMENTUM_LOW, MOMENTUM_HIGH, pct)

    return Schedule("CLR", n, lr, momentum if cycle_momentum else None)

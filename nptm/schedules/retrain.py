"""Per-iteration retraining schedules (SPEC.md table). t = iteration index in [0, total_iters)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from nptm.schedules.original import OriginalSchedule

MOMENTUM_HIGH, MOMENTUM_LOW = 0.95, 0.85  # OneCycleLR's max_momentum / base_momentum
CLR_DIV_FACTOR = CLR_FINAL_DIV_FACTOR = 100.0  # the reference code's OneCycleLR arguments


def _cos(start: float, end: float, pct: float) -> float:
    """Cosine anneal from start (pct 0) to end (pct 1), written exactly as torch's OneCycleLR."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class Schedule:
    """A retraining schedule: ``lr(it)`` and ``momentum(it)`` (None: leave the optimizer's) per iteration."""

    name: str
    total_iters: int
    lr_fn: Callable[[int], float] = field(repr=False)
    momentum_fn: Callable[[int], float] | None = field(default=None, repr=False)

    def _check(self, it: int) -> None:
        if not 0 <= it < self.total_iters:
            raise ValueError(f"{self.name}: iteration {it} is outside [0, {self.total_iters})")

    def lr(self, it: int) -> float:
        self._check(it)
        return float(self.lr_fn(it))

    def momentum(self, it: int) -> float | None:
        self._check(it)
        return None if self.momentum_fn is None else float(self.momentum_fn(it))

    def lrs(self) -> list[float]:
        """Every iteration's lr (for plots and logs)."""
        return [self.lr(it) for it in range(self.total_iters)]


def _ft(o: OriginalSchedule, n: int, ipe: int, t_rt: float, **_) -> Schedule:
    """FT: constant eta_min."""
    return Schedule("FT", n, lambda it: o.eta_min)


def _lrw(o: OriginalSchedule, n: int, ipe: int, t_rt: float, **_) -> Schedule:
    """LRW: eta_orig(T - T_rt + it / iters_per_epoch), replaying the last T_rt epochs (needs T_rt <= T)."""
    if t_rt > o.T:
        raise ValueError(f"LRW replays the last {t_rt} epochs but the original schedule has only {o.T}")
    return Schedule("LRW", n, lambda it: o.lr_at(o.T - t_rt + it / ipe))


def _slr(o: OriginalSchedule, n: int, ipe: int, t_rt: float, *, warmup_frac: float, **_) -> Schedule:
    """SLR: W = warmup_frac * N; it < W: cosine ramp eta_min -> eta_max over it / W (the reference
    code's 'cos' warm-up); then the original's stepwise schedule at fraction (it - W) / (N - W)."""
    w = warmup_frac * n

    def lr(it: int) -> float:
        if it < w:
            return _cos(o.eta_min, o.eta_max, it / w)
        return o.lr_at_fraction((it - w) / (n - w))

    return Schedule("SLR", n, lr)


def _clr(o: OriginalSchedule, n: int, ipe: int, t_rt: float, *, warmup_frac: float, cycle_momentum: bool, **_) -> Schedule:
    """CLR: torch's OneCycleLR(max_lr=eta_max, total_steps=N, pct_start=warmup_frac, div_factor=100,
    final_div_factor=100, anneal_strategy='cos'). With E1 = warmup_frac * N - 1:
    it <= E1: cos-anneal eta_max/100 -> eta_max over pct = it / E1; else cos-anneal eta_max -> eta_max/1e4
    over pct = (it - E1) / (N - 1 - E1). eta_max/100 is eta_min for both presets. Momentum (only with
    cycle_momentum) follows the same phases 0.95 -> 0.85 -> 0.95."""
    peak = o.eta_max
    start, end = peak / CLR_DIV_FACTOR, peak / CLR_DIV_FACTOR / CLR_FINAL_DIV_FACTOR
    e1, e2 = float(warmup_frac * n) - 1, n - 1

    def phase(it: int) -> tuple[int, float]:
        if it <= e1:
            return 0, it / e1 if e1 > 0 else 1.0  # torch divides 0 by 0 here (N * warmup_frac == 1)
        return 1, (it - e1) / (e2 - e1)

    def lr(it: int) -> float:
        p, pct = phase(it)
        return _cos(start, peak, pct) if p == 0 else _cos(peak, end, pct)

    def momentum(it: int) -> float:
        p, pct = phase(it)
        return _cos(MOMENTUM_HIGH, MOMENTUM_LOW, pct) if p == 0 else _cos(MOMENTUM_LOW, MOMENTUM_HIGH, pct)

    return Schedule("CLR", n, lr, momentum if cycle_momentum else None)


def _linear(name: str, peak: float, n: int, warmup_frac: float) -> Schedule:
    w = warmup_frac * n
    return Schedule(name, n, lambda it: peak * it / w if it < w else peak * (n - it) / (n - w))


def _llr(o: OriginalSchedule, n: int, ipe: int, t_rt: float, *, warmup_frac: float, **_) -> Schedule:
    """LLR: W = warmup_frac * N; eta_max * it / W for it < W, then eta_max * (N - it) / (N - W)."""
    return _linear("LLR", o.eta_max, n, warmup_frac)


def _allr(o: OriginalSchedule, n: int, ipe: int, t_rt: float, *, warmup_frac: float, peak_scale: float, **_) -> Schedule:
    """ALLR: LLR with peak d * eta_max, d = peak_scale (compute it with ``allr_scale``)."""
    if not 0 < peak_scale <= 1:
        raise ValueError(f"ALLR peak_scale must be in (0, 1], got {peak_scale}")
    return _linear("ALLR", peak_scale * o.eta_max, n, warmup_frac)


def _none(o: OriginalSchedule, n: int, ipe: int, t_rt: float, **_) -> Schedule:
    """none: no retraining, 0 iterations."""
    return Schedule("none", 0, lambda it: 0.0)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "FT": _ft, "LRW": _lrw, "SLR": _slr, "CLR": _clr, "LLR": _llr, "ALLR": _allr, "none": _none,
}


def build_schedule(
    name: str,
    original: OriginalSchedule,
    retrain_epochs: float,
    iters_per_epoch: int,
    *,
    peak_scale: float = 1.0,
    warmup_frac: float = 0.1,
    cycle_momentum: bool = False,
) -> Schedule:
    """The retraining schedule ``name`` over N = round(retrain_epochs * iters_per_epoch) iterations.

    See each builder's docstring in ``SCHEDULES`` for its formula. ``peak_scale`` is ALLR's d,
    ``warmup_frac`` the warm-up share (SLR, CLR's pct_start, LLR, ALLR), ``cycle_momentum`` CLR's
    OneCycle momentum cycling.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choices: {', '.join(SCHEDULES)}")
    if isinstance(iters_per_epoch, bool) or not isinstance(iters_per_epoch, int) or iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be a positive int, got {iters_per_epoch!r}")
    if not retrain_epochs >= 0:
        raise ValueError(f"retrain_epochs must be >= 0, got {retrain_epochs}")
    if not 0 <= warmup_frac < 1:
        raise ValueError(f"warmup_frac must be in [0, 1), got {warmup_frac}")
    if name in ("SLR", "CLR") and warmup_frac == 0:
        raise ValueError(f"{name} needs warmup_frac > 0")
    n = round(retrain_epochs * iters_per_epoch)
    return SCHEDULES[name](original, n, iters_per_epoch, retrain_epochs, warmup_frac=warmup_frac, peak_scale=peak_scale, cycle_momentum=cycle_momentum)


def set_lr(optimizer: torch.optim.Optimizer, schedule: Schedule, it: int) -> float:
    """Set iteration ``it``'s lr (and momentum, or Adam's beta1, when the schedule gives one) on every
    param group; returns the lr."""
    lr, momentum = schedule.lr(it), schedule.momentum(it)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if momentum is not None:
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
    return lr

"""Per-iteration retraining schedules (SPEC.md table): the ``Schedule`` type, the ``SCHEDULES`` registry
(one file per schedule in this package registers a ``RetrainSchedule``: its builder and what it is) and
``build_schedule``. t = iteration index in [0, total_iters)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from nptm.schedules.original import Original
from nptm.utils.registry import Registry


def cos_anneal(start: float, end: float, pct: float) -> float:
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


class ScheduleBuilder(Protocol):
    """``builder(original, n, iters_per_epoch, t_rt, *, warmup_frac, peak_scale, cycle_momentum) -> Schedule``: n iterations,
    ``iters_per_epoch`` iterations per unit (epoch) of ``original``, ``t_rt`` the retraining length in those units;
    ``peak_scale`` is ALLR's d (None: not given). Builders ignore the options they do not use."""

    def __call__(self, o: Original, n: int, iters_per_epoch: int, t_rt: float, *, warmup_frac: float,
                 peak_scale: float | None, cycle_momentum: bool) -> Schedule: ...


@dataclass(frozen=True)
class RetrainSchedule:
    """A registered retraining schedule: its builder and the properties a study asks it about.

    ``restarts``: starts again from a large lr (not FT, not none); ``uses_d``: takes ALLR's peak factor d;
    ``retrains``: runs any iterations at all (none does not); ``default``: part of the default study;
    ``check(t_rt, T)``: why a retraining budget cannot work with an original schedule of T epochs, or None."""

    name: str
    build: ScheduleBuilder
    restarts: bool = True
    uses_d: bool = False
    retrains: bool = True
    default: bool = True
    check: Callable[[float, float], str | None] | None = None

    def __call__(self, *args, **kwargs) -> Schedule:
        return self.build(*args, **kwargs)

    def problem(self, retrain_epochs: float, total_epochs: float) -> str | None:
        return self.check(retrain_epochs, total_epochs) if self.check else None


# In-package schedules are discovered; third-party packages add theirs through the ``nptm.schedules`` entry
# point group (a builder function, or a RetrainSchedule).
SCHEDULES: Registry[RetrainSchedule] = Registry("schedule", entry_point_group="nptm.schedules", package="nptm.schedules")


def retrain_schedule(name: str, *, position: float = float("inf"), **properties):
    """``@retrain_schedule("X", restarts=..., uses_d=...)`` above a builder registers it as schedule X."""
    def wrap(build: ScheduleBuilder) -> ScheduleBuilder:
        SCHEDULES.register(name, RetrainSchedule(name, build, **properties), position=position)
        return build
    return wrap


def schedule_kind(name: str) -> RetrainSchedule:
    """The registered schedule ``name`` (a plain builder from an entry point counts as a restarting schedule)."""
    found = SCHEDULES[name]
    return found if isinstance(found, RetrainSchedule) else RetrainSchedule(name, found)


def warmup_linear_decay(name: str, peak: float, n: int, warmup_frac: float) -> Schedule:
    """W = warmup_frac * N; peak * it / W for it < W, then peak * (N - it) / (N - W) (LLR, ALLR)."""
    w = warmup_frac * n
    return Schedule(name, n, lambda it: peak * it / w if it < w else peak * (n - it) / (n - w))


def make_schedule(name: str, original: Original, n: int, iters_per_epoch: int, retrain_epochs: float, *,
                  peak_scale: float | None = None, warmup_frac: float = 0.1, cycle_momentum: bool = False) -> Schedule:
    """Schedule ``name`` over exactly ``n`` iterations; ``retrain_epochs`` is T_rt in ``original``'s units."""
    builder = schedule_kind(name).build
    if isinstance(iters_per_epoch, bool) or not isinstance(iters_per_epoch, int) or iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be a positive int, got {iters_per_epoch!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of retraining iterations must be an int >= 0, got {n!r}")
    if not 0 <= warmup_frac < 1:
        raise ValueError(f"warmup_frac must be in [0, 1), got {warmup_frac}")
    return builder(original, n, iters_per_epoch, retrain_epochs, warmup_frac=warmup_frac, peak_scale=peak_scale,
                   cycle_momentum=cycle_momentum)


def build_schedule(
    name: str,
    original: Original,
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
    if not retrain_epochs >= 0:
        raise ValueError(f"retrain_epochs must be >= 0, got {retrain_epochs}")
    n = round(retrain_epochs * iters_per_epoch)
    return make_schedule(name, original, n, iters_per_epoch, retrain_epochs, peak_scale=peak_scale,
                         warmup_frac=warmup_frac, cycle_momentum=cycle_momentum)


def set_momentum(optimizer: torch.optim.Optimizer, momentum: float | None) -> None:
    """Set SGD's momentum (or Adam's beta1) on every param group; None leaves them."""
    if momentum is None:
        return
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum


def set_lr(optimizer: torch.optim.Optimizer, schedule: Schedule, it: int) -> float:
    """Set iteration ``it``'s lr (and momentum, or Adam's beta1, when the schedule gives one) on every
    param group; returns the lr."""
    lr = schedule.lr(it)
    for group in optimizer.param_groups:
        group["lr"] = lr
    set_momentum(optimizer, schedule.momentum(it))
    return lr

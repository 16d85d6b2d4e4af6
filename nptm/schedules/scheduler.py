"""Retraining schedules as ``torch.optim.lr_scheduler.LRScheduler``s, for any training loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from nptm.schedules.original import Original, as_original
from nptm.schedules.retrain import Schedule, make_schedule, set_momentum


class RetrainLR(LRScheduler):
    """Steps a ``Schedule`` once per iteration: call ``step()`` after every ``optimizer.step()``.

    Every param group gets the schedule's lr (and its momentum / Adam beta1 where the schedule cycles
    it, e.g. CLR with ``cycle_momentum``). Past the last iteration the last lr is kept.
    ``state_dict()`` holds the position and the schedule's name, length and a few of its lrs, so that
    ``load_state_dict`` refuses the state of a different schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, last_epoch: int = -1):
        if schedule.total_iters < 1:
            raise ValueError(f"schedule {schedule.name!r} has no iterations to step through")
        self.schedule = schedule
        n = schedule.total_iters
        self.signature = (schedule.name, n, *(schedule.lr(i) for i in sorted({0, n // 10, n // 2, n - 1})))
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        it = min(max(self.last_epoch, 0), self.schedule.total_iters - 1)
        set_momentum(self.optimizer, self.schedule.momentum(it))
        return [self.schedule.lr(it)] * len(self.optimizer.param_groups)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        theirs = tuple(state_dict.get("signature", ()))
        if theirs != self.signature:
            raise ValueError(f"this state is of schedule {theirs[:2]} with lrs {theirs[2:]}, not of "
                             f"{self.signature[:2]} with lrs {self.signature[2:]}")
        super().load_state_dict(state_dict)


def retrain_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    original: Original | Callable[[int], float] | Sequence[float],
    retrain_steps: int,
    d: float | None = None,
    steps_per_epoch: int = 1,
    original_steps: int | None = None,
    warmup_frac: float = 0.1,
    cycle_momentum: bool = False,
    last_epoch: int = -1,
) -> RetrainLR:
    """The retraining schedule ``name`` (FT, LRW, SLR, CLR, LLR, ALLR, or a plug-in) as an LRScheduler
    over ``retrain_steps`` optimizer steps.

    ``original`` is the schedule the model was trained with: an ``OriginalSchedule`` (step decay or
    linear, in epochs: give ``steps_per_epoch``), a ``StepwiseOriginal`` (per step: cosine, one-cycle, a
    recorded torch scheduler), a list of per-step lrs, or a callable of the step with ``original_steps``.
    ``steps_per_epoch`` is the number of optimizer steps per unit of ``original`` (1 when it is per step).
    ``d`` is ALLR's peak factor (``allr_scale``); the other schedules ignore it.
    """
    o = as_original(original, original_steps)
    if isinstance(retrain_steps, bool) or not isinstance(retrain_steps, int) or retrain_steps < 1:
        raise ValueError(f"retrain_steps must be a positive int, got {retrain_steps!r}")
    schedule = make_schedule(name, o, retrain_steps, steps_per_epoch, retrain_steps / steps_per_epoch, peak_scale=d,
                             warmup_frac=warmup_frac, cycle_momentum=cycle_momentum)
    return RetrainLR(optimizer, schedule, last_epoch)

"""The original (dense) training schedule that every retraining schedule is defined against."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

_EPS = 1e-9
DECAYS = ("step", "linear")  # milestone comparisons tolerate float noise (e.g. (1/3) * 90)


@runtime_checkable
class Original(Protocol):
    """What the retraining schedules read of an original schedule, T units long (epochs or steps)."""

    @property
    def T(self) -> float: ...  # length
    @property
    def eta_max(self) -> float: ...  # largest lr
    @property
    def eta_min(self) -> float: ...  # last lr
    def lr_at(self, t: float) -> float: ...  # lr at a (fractional) point of [0, T]
    def lr_at_fraction(self, fraction: float) -> float: ...  # the decay part (after any warm-up) at fraction of its length


@dataclass(frozen=True)
class OriginalSchedule:
    """The lr after an optional linear warm-up, by ``decay``:

    - ``step``: ``lr`` times ``gamma`` per passed milestone (``milestones``: sorted fractions of ``epochs``
      in (0, 1)); a warm-up scales it (drops still apply at their epochs).
    - ``linear``: ``lr`` at the end of the warm-up, then linearly to 0 at ``epochs`` (ffcv-imagenet's
      'cyclic' schedule; milestones and gamma unused).

    ``warmup_epochs`` > 0 ramps linearly from ``warmup_start * lr`` (ffcv-imagenet: 1e-4) to ``lr``.
    """

    lr: float
    epochs: int
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0
    decay: str = "step"

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        if not self.lr > 0 or not self.epochs > 0:
            raise ValueError(f"lr and epochs must be positive, got lr={self.lr}, epochs={self.epochs}")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be sorted fractions of the epochs in (0, 1), got {self.milestones}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be positive, got {self.gamma}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.warmup_start <= 1:
            raise ValueError(f"warmup_start must be in [0, 1], got {self.warmup_start}")
        if self.decay not in DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; choose from {', '.join(DECAYS)}")

    @property
    def T(self) -> int:
        """Length of the original training in epochs."""
        return self.epochs

    @property
    def eta_max(self) -> float:
        """Largest lr of the schedule."""
        return max(self.lr, self.eta_min)

    @property
    def eta_min(self) -> float:
        """The schedule's last lr: step, after every drop; linear, one epoch before the end, at most ``lr``
        (the decay reaches 0 at ``epochs``, which would make fine-tuning at eta_min a no-op)."""
        if self.decay == "linear":
            return self.lr * min(1.0, 1.0 / (self.epochs - self.warmup_epochs))
        return self.lr * self.gamma ** len(self.milestones)

    def lr_at_fraction(self, fraction: float) -> float:
        """The decay part (no warm-up) at ``fraction`` of its length: step, lr * gamma^(milestones <= fraction);
        linear, lr * (1 - fraction)."""
        if self.decay == "linear":
            return self.lr * (1.0 - fraction)
        return self.lr * self.gamma ** sum(fraction >= m - _EPS for m in self.milestones)

    def lr_at(self, epoch: float) -> float:
        """lr at a (fractional) epoch in [0, T]."""
        if not 0 <= epoch <= self.epochs:
            raise ValueError(f"epoch {epoch} is outside [0, {self.epochs}]")
        w = self.warmup_epochs
        if self.decay == "linear":
            lr = self.lr if epoch < w else self.lr_at_fraction((epoch - w) / (self.epochs - w))
        else:
            lr = self.lr_at_fraction(epoch / self.epochs)
        if epoch < w:
            lr *= self.warmup_start + (1 - self.warmup_start) * epoch / w
        return lr


@dataclass(frozen=True)
class StepwiseOriginal:
    """Any original schedule given per step: ``lrs[t]`` is the lr of step t, T = len(lrs) steps.

    eta_max = max(lrs), eta_min = lrs[-1]. The decay part (SLR's resampling) runs from the first step at
    eta_max to the end, so a one-cycle or warm-up recipe is not warmed up twice. Build one from a callable
    of the step (``from_function``) or by recording a torch scheduler (``from_torch``: cosine, one-cycle...).
    """

    lrs: tuple[float, ...]
    peak: int = field(init=False, repr=False)  # first step at eta_max

    def __post_init__(self) -> None:
        lrs = tuple(float(x) for x in self.lrs)
        if not lrs or any(not math.isfinite(x) or x < 0 for x in lrs) or max(lrs) <= 0:
            raise ValueError("an original schedule needs at least one step, finite lrs >= 0 and a positive maximum")
        object.__setattr__(self, "lrs", lrs)
        object.__setattr__(self, "peak", lrs.index(max(lrs)))

    @classmethod
    def from_function(cls, lr_of_step: Callable[[int], float], steps: int) -> "StepwiseOriginal":
        """``lr_of_step(t)`` for t in range(steps)."""
        return cls(tuple(float(lr_of_step(t)) for t in range(steps)))

    @classmethod
    def from_torch(cls, make_scheduler: Callable[[torch.optim.Optimizer], object], steps: int, lr: float) -> "StepwiseOriginal":
        """Record ``steps`` lrs of ``make_scheduler(optimizer)`` (a torch LRScheduler, stepped once per step)
        on a throwaway SGD optimizer created with ``lr``: e.g. ``lambda opt: CosineAnnealingLR(opt, steps)``."""
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched, lrs = make_scheduler(opt), []
        for t in range(steps):
            lrs.append(float(opt.param_groups[0]["lr"]))
            if t + 1 < steps:
                opt.step()
                sched.step()
        return cls(tuple(lrs))

    @property
    def T(self) -> int:
        return len(self.lrs)

    @property
    def eta_max(self) -> float:
        return self.lrs[self.peak]

    @property
    def eta_min(self) -> float:
        return self.lrs[-1]

    def lr_at(self, t: float) -> float:
        """lr of step floor(t), t in [0, T] (T gives the last step's lr)."""
        if not 0 <= t <= self.T:
            raise ValueError(f"step {t} is outside [0, {self.T}]")
        return self.lrs[min(self.T - 1, math.floor(t + _EPS))]

    def lr_at_fraction(self, fraction: float) -> float:
        """The decay part (peak step to the end) at ``fraction`` of its length."""
        span = self.T - self.peak
        return self.lrs[self.peak + min(span - 1, math.floor(fraction * span + _EPS))]


def as_original(original: Original | Callable[[int], float] | Sequence[float], steps: int | None = None) -> Original:
    """An ``Original`` from itself, a sequence of per-step lrs, or a callable of the step (``steps`` long)."""
    if isinstance(original, Original):
        return original
    if callable(original):
        if steps is None or isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"an original schedule given as a callable of the step needs its length in steps, got {steps!r}")
        return StepwiseOriginal.from_function(original, steps)
    if isinstance(original, Sequence):
        return StepwiseOriginal(tuple(original))
    raise TypeError(f"original must be an OriginalSchedule, a StepwiseOriginal, a callable of the step or a list of lrs, "
                    f"got {type(original).__name__}")


ORIGINAL_SCHEDULES: dict[str, OriginalSchedule] = {
    # 160 epochs, lr 0.1, x0.1 at 50% and 75% (SPEC: CIFAR).
    "cifar": OriginalSchedule(0.1, 160),
    # 90 epochs, lr 0.1, x0.1 at epochs 30 and 60 (SPEC: ImageNet); set warmup_epochs for large batches.
    "imagenet": OriginalSchedule(0.1, 90, milestones=(1 / 3, 2 / 3)),
}

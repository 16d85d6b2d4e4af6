"""The original (dense) training schedule that every retraining schedule is defined against."""
from __future__ import annotations

from dataclasses import dataclass

_EPS = 1e-9
DECAYS = ("step", "linear")  # milestone comparisons tolerate float noise (e.g. (1/3) * 90)


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


ORIGINAL_SCHEDULES: dict[str, OriginalSchedule] = {
    # 160 epochs, lr 0.1, x0.1 at 50% and 75% (SPEC: CIFAR).
    "cifar": OriginalSchedule(0.1, 160),
    # 90 epochs, lr 0.1, x0.1 at epochs 30 and 60 (SPEC: ImageNet); set warmup_epochs for large batches.
    "imagenet": OriginalSchedule(0.1, 90, milestones=(1 / 3, 2 / 3)),
}

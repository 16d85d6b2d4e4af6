"""The original (dense) training schedule that every retraining schedule is defined against."""
from __future__ import annotations

from dataclasses import dataclass

_EPS = 1e-9  # milestone comparisons tolerate float noise (e.g. (1/3) * 90)


@dataclass(frozen=True)
class OriginalSchedule:
    """Stepwise lr: ``lr`` times ``gamma`` per passed milestone, after an optional linear warm-up from 0.

    ``milestones`` are fractions of ``epochs`` in (0, 1), sorted. ``warmup_epochs`` > 0 ramps linearly
    from 0 to ``lr`` over that many epochs (drops still apply at their epochs).
    """

    lr: float
    epochs: int
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0.0

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
        """The schedule's last lr (after every drop)."""
        return self.lr * self.gamma ** len(self.milestones)

    def lr_at_fraction(self, fraction: float) -> float:
        """The stepwise part (no warm-up) at ``fraction`` of training: lr * gamma^(milestones <= fraction)."""
        return self.lr * self.gamma ** sum(fraction >= m - _EPS for m in self.milestones)

    def lr_at(self, epoch: float) -> float:
        """lr at a (fractional) epoch in [0, T]."""
        if not 0 <= epoch <= self.epochs:
            raise ValueError(f"epoch {epoch} is outside [0, {self.epochs}]")
        lr = self.lr_at_fraction(epoch / self.epochs)
        if epoch < self.warmup_epochs:
            lr *= epoch / self.warmup_epochs
        return lr


ORIGINAL_SCHEDULES: dict[str, OriginalSchedule] = {
    # 160 epochs, lr 0.1, x0.1 at 50% and 75% (SPEC: CIFAR).
    "cifar": OriginalSchedule(0.1, 160),
    # 90 epochs, lr 0.1, x0.1 at epochs 30 and 60 (SPEC: ImageNet); set warmup_epochs for large batches.
    "imagenet": OriginalSchedule(0.1, 90, milestones=(1 / 3, 2 / 3)),
}

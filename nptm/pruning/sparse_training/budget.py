"""Rules that scale a method's pressure with the budget it is given, so that its defaults work at 5 epochs as at
500 (the papers' values were tuned for hundreds of epochs; the 2023 paper tuned each method per budget).

- ``decay_budget``: the total shrink a weight decay coefficient of 1 gives over a run, sum_t lr_t / (1 - momentum)
  (SGD with momentum m moves a decayed weight by lr * c * w / (1 - m) per step in steady state), so a coefficient
  c = P / decay_budget shrinks a weight that only decays by about e^-P by the end (GSM).
- ``ramp``: the cubic GMP ramp as a smooth function: the sparsity that the methods which *reach* their sparsity
  (STR, CS) are steered along.
"""
from __future__ import annotations

import math

WINDOW = (0.1, 0.75)  # the GMP window: steered methods reach the target at 3/4 of the budget


def momentum_of(optimizer) -> float:
    group = optimizer.param_groups[0]
    return float(group.get("momentum", 0.0) or 0.0)


def decay_budget(trainer, total_iters: int) -> float:
    """sum_t lr_t / (1 - momentum) over the run; a host without a schedule: the optimizer's lr throughout."""
    m = momentum_of(trainer.optimizer)
    schedule = getattr(trainer, "schedule", None)
    lr = schedule.lr if schedule is not None else lambda t: float(trainer.optimizer.param_groups[0]["lr"])
    return sum(lr(t) for t in range(total_iters)) / (1.0 - min(m, 0.999))


def ramp(final: float, iteration: int, total_iters: int, window: tuple[float, float] = WINDOW) -> float:
    """s_f (1 - (1 - x)^3), x the fraction of the window passed (0 before it, 1 after)."""
    start, end = window[0] * total_iters, window[1] * total_iters
    x = min(max((iteration - start) / max(end - start, 1.0), 0.0), 1.0)
    return final * (1 - (1 - x) ** 3)


def horizon(optimizer, period: int) -> int:
    """The steps over which a steered method closes its gap: the momentum's memory 1 / (1 - m), at least the
    steering period."""
    return max(period, round(1 / (1 - min(momentum_of(optimizer), 0.99))))


def checks(total_iters: int, count: int = 100) -> int:
    """The period, in iterations, of ``count`` steering steps over the run."""
    return max(1, math.floor(total_iters / count))

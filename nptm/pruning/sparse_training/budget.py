"""Rules that scale a method's pressure with the budget it is given, so that its defaults work at 5 epochs as at
500 (the papers' values were tuned for hundreds of epochs; the 2023 paper tuned each method per budget).

- ``decay_budget``: the total shrink a weight decay coefficient of 1 gives over a run, sum_t lr_t / (1 - momentum)
  (SGD with momentum m moves a decayed weight by lr * c * w / (1 - m) per step in steady state), so a coefficient
  c = P / decay_budget shrinks a weight that only decays by about e^-P by the end.
- ``ramp``: the cubic GMP ramp as a smooth function, the sparsity a method that *reaches* its sparsity (STR, CS)
  is steered along.
- ``steer``: one multiplicative controller step of such a method's pressure (CS's penalty, STR's threshold decay).
"""
from __future__ import annotations

import math

import torch

WINDOW = (0.1, 0.75)  # the GMP window: steered methods reach the target at 3/4 of the budget
STEER_UP, STEER_DOWN, STEER_TOLERANCE = 1.2, 2.0, 0.005


def momentum_of(optimizer) -> float:
    group = optimizer.param_groups[0]
    return float(group.get("momentum", 0.0) or 0.0)


def decay_budget(trainer, total_iters: int, weights=None) -> float:
    """sum_t lr_t * weights(t) / (1 - momentum) over the run (``weights`` None: 1); a host without a schedule:
    the optimizer's lr throughout."""
    m = momentum_of(trainer.optimizer)
    schedule = getattr(trainer, "schedule", None)
    lr = schedule.lr if schedule is not None else lambda t: float(trainer.optimizer.param_groups[0]["lr"])
    total = sum(lr(t) * (1.0 if weights is None else weights(t)) for t in range(total_iters))
    return total / (1.0 - min(m, 0.999))


def ramp(final: float, iteration: int, total_iters: int, window: tuple[float, float] = WINDOW) -> float:
    """s_f (1 - (1 - x)^3), x the fraction of the window passed (0 before it, 1 after)."""
    start, end = window[0] * total_iters, window[1] * total_iters
    x = min(max((iteration - start) / max(end - start, 1.0), 0.0), 1.0)
    return final * (1 - (1 - x) ** 3)


@torch.no_grad()
def steer(knob: torch.Tensor, reached: float, goal: float, low: float, high: float) -> None:
    """Raise ``knob`` (a scalar buffer) by STEER_UP when ``reached`` lags ``goal``, lower it by STEER_DOWN when ahead
    (faster down: what a method prunes while ahead is hard to undo)."""
    if reached < goal - STEER_TOLERANCE:
        knob.mul_(STEER_UP)
    elif reached > goal + STEER_TOLERANCE:
        knob.div_(STEER_DOWN)
    knob.clamp_(low, high)


def checks(total_iters: int, count: int = 100) -> int:
    """The period, in iterations, of ``count`` controller steps over the run."""
    return max(1, math.floor(total_iters / count))

"""CS (Savarese, Silva & Maire, NeurIPS 2020, "Winning the Lottery with Continuous Sparsification"): every prunable
weight computes with w * sigmoid(beta * s) / sigmoid(s_init), one learned score s per weight; beta rises every
epoch, beta_e = beta_final^(e / (E - 1)), so the soft mask hardens; an L1 penalty lambda * sum of the (scaled) masks
pushes scores down. The final mask is s > 0 (the limit beta -> infinity): the weights end as
w / sigmoid(s_init) where s > 0 and 0 elsewhere. The sparsity is reached (through s_init and lambda), not set:
``finish`` reports it, then projects onto the target.

Defaults and departures: s_init = 0, lambda = 1e-8, beta_final = 200, no weight decay on s, the scale
1 / sigmoid(s_init) in the mask and the penalty (lolemacs/continuous-sparsification ``main.py``, ``layers.py``; its
README suggests s_init = -0.1 for high sparsity). One round of the budget T, no rewinding (the 2023 paper's use);
the penalty's gradient lambda * scale * beta * sigmoid'(beta * s) is added to the scores' gradients before every
optimizer step instead of to the loss (the study's loss is the cross-entropy), so fp16 loss scaling leaves it as is.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from nptm.pruning.masks import unwrap
from nptm.pruning.sparse_training import budget
from nptm.pruning.sparse_training.base import SparseTraining, owner, register, unparametrize

PENALTY = (0.0, 1.0)  # the range of the steered lambda


class SoftMask(nn.Module):
    """Parametrization w -> w * sigmoid(beta * s) * scale, a learned score s per weight, beta a buffer."""

    def __init__(self, weight: Tensor, s_init: float, scale: float):
        super().__init__()
        self.s = nn.Parameter(torch.full_like(weight, float(s_init)).detach())
        self.register_buffer("beta", torch.ones((), dtype=weight.dtype, device=weight.device))
        self.register_buffer("penalty", torch.full((), float("nan"), dtype=torch.float32, device=weight.device))
        self.scale = scale

    def forward(self, weight: Tensor) -> Tensor:
        return weight * (torch.sigmoid(self.beta * self.s) * self.scale)


@register(position=4)
@dataclasses.dataclass
class CS(SparseTraining):
    name: ClassVar[str] = "cs"
    paper: ClassVar[str] = "Savarese et al., NeurIPS 2020"
    reaches_sparsity: ClassVar[bool] = True
    s_init: float = dataclasses.field(default=0.1, metadata={"help": "initial mask score s (the authors' code: 0 "
                                                                     "or -0.01)"})
    penalty: float = dataclasses.field(
        default=1e-8, metadata={"help": "lambda of the L1 penalty on the masks (the initial one with steer)"})
    beta_final: float = dataclasses.field(default=200.0, metadata={"help": "temperature beta in the last epoch"})
    steer: bool = dataclasses.field(
        default=True, metadata={"help": "steer lambda so the mask's zeros (s <= 0) follow the GMP ramp to the target"})

    @property
    def scale(self) -> float:
        return 1.0 + math.exp(-self.s_init)  # 1 / sigmoid(s_init)

    def _setup(self, model: nn.Module) -> None:
        self.parametrize(model, lambda w: SoftMask(w, self.s_init, self.scale))
        self.period = budget.checks(self.total_iters)

    def beta_at(self, iteration: int) -> float:
        """beta before optimizer step ``iteration``: beta_final^(t / (T - 1)), from 1 to beta_final."""
        return self.beta_final ** (min(iteration, self.total_iters - 1) / max(self.total_iters - 1, 1))

    def _extra_decay(self, weight_decay: float) -> float:
        return 0.0

    def on_fit_start(self, trainer) -> None:
        for p in self.parametrizations(unwrap(trainer.model)):
            if torch.isnan(p.penalty):  # not resumed from a checkpoint
                p.penalty.fill_(min(max(self.penalty, PENALTY[0]), PENALTY[1]) if self.steer else self.penalty)
        super().on_fit_start(trainer)

    @torch.no_grad()
    def on_step_end(self, trainer, step, loss) -> None:
        """Steering: set lambda so that, at the current lr, momentum and beta, the penalty alone would move the
        score at the goal's quantile to 0 over the next HORIZON steps (0 once it is there)."""
        t = trainer.iteration
        model = unwrap(trainer.model)
        params = self.parametrizations(model)
        for p in params:
            p.beta.fill_(self.beta_at(t))
        if not self.steer or t % self.period:
            return
        lr = max(float(trainer.optimizer.param_groups[0]["lr"]), 1e-12)
        m = budget.momentum_of(trainer.optimizer)
        horizon = budget.horizon(trainer.optimizer, self.period)
        goal = budget.ramp(self.sparsity, t + horizon, self.total_iters)  # where the ramp will be
        k = round(goal * self.numel)
        q = float(torch.cat([p.s.detach().flatten() for p in params]).float().kthvalue(k).values) if k else -1.0
        beta = float(params[0].beta)
        slope = beta * self.scale / (4 * math.cosh(min(abs(beta * q) / 2, 300.0)) ** 2)  # d/ds of scale * sigmoid(beta s) at q
        need = q * (1 - m) / (lr * max(slope, 1e-30) * horizon) if q > 0 else 0.0
        for p in params:
            p.penalty.fill_(min(max(need, PENALTY[0]), PENALTY[1]))

    @torch.no_grad()
    def before_step(self, trainer) -> None:
        for p in self.parametrizations(unwrap(trainer.model)):
            sig = torch.sigmoid(p.beta * p.s)
            push = sig * (1 - sig) * (p.beta * p.penalty * self.scale)
            if p.s.grad is None:
                p.s.grad = push
            else:
                p.s.grad.add_(push)

    def _own_weights(self, model: nn.Module, used: list[Tensor]) -> list[Tensor]:
        """The hard mask s > 0 (the forward's sigmoid mask has no exact zeros): CS's own reached sparsity."""
        return [w * (p.s > 0) for w, p in zip(self.dense(model), self.parametrizations(model))]

    @torch.no_grad()
    def _finalize(self, model: nn.Module) -> None:
        """The weights the forward used, w * scale * sigmoid(beta * s), where s > 0, 0 elsewhere (the 2023 code)."""
        for n in self.names:
            module, attr = owner(model, n)
            p = module.parametrizations[attr][0]
            hard = getattr(module, attr) * (p.s > 0)
            unparametrize(module, attr, leave_parametrized=False)
            getattr(module, attr).copy_(hard)

"""STR (Kusupati, Ramanujan, Somani, Wortsman, Jain, Kakade & Farhadi, ICML 2020, "Soft Threshold Weight
Reparameterization for Learnable Sparsity"): every prunable layer computes with
W_eff = sign(W) * ReLU(|W| - sigmoid(s)), one learned scalar s per layer; weight decay on s pulls sigmoid(s) up
from ~0, so small weights fall under the threshold. The sparsity is reached (it depends on ``s_init``, the decay on
s and the budget), not set: ``finish`` reports the zeros of W_eff, then projects onto the target.

Defaults and departures: the paper tunes ``s_init`` and the weight decay per sparsity and per budget (its ResNet-50
configs: s_init -3200 with 100 ImageNet epochs; at that value sigmoid(s) and its gradient are exactly 0 in float32,
and in a CIFAR-sized budget the decay never lifts s into range, so STR trains densely and is projected one-shot).
Here ``steer`` (on by default) does that tuning during the run: s starts at ``s_init`` = -10 (sigmoid 4.5e-5, below
every weight but within the decay's reach), and the decay on s is multiplied or divided by 1.5 a hundred times
over the budget so that the zeros of W_eff follow GMP's cubic ramp to the target between 10% and 75% of the budget
(``budget.py``). ``--str-steer false`` runs the paper's fixed rule with ``threshold_decay`` (None: the study's
weight decay). Sigmoid as g (the code's ``sparse_function``); the threshold in the weights' dtype. Every prunable
layer is reparametrized (STR can keep the first or last layer dense).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from nptm.pruning.masks import unwrap
from nptm.pruning.sparse_training import budget
from nptm.pruning.sparse_training.base import SparseTraining, register

DECAY = (0.0, 100.0)  # the range of the steered decay on s


class SoftThreshold(nn.Module):
    """Parametrization W -> sign(W) * relu(|W| - sigmoid(s)) with a learned scalar s; ``decay`` the steered decay
    on s (a buffer, so checkpoints resume it)."""

    def __init__(self, weight: Tensor, s_init: float):
        super().__init__()
        self.s = nn.Parameter(torch.full((), float(s_init), dtype=weight.dtype, device=weight.device))
        self.register_buffer("decay", torch.full((), float("nan"), dtype=torch.float32, device=weight.device))

    def forward(self, weight: Tensor) -> Tensor:
        return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(self.s))


@register(position=3)
@dataclasses.dataclass
class STR(SparseTraining):
    name: ClassVar[str] = "str"
    paper: ClassVar[str] = "Kusupati et al., ICML 2020"
    reaches_sparsity: ClassVar[bool] = True
    s_init: float = dataclasses.field(default=-10.0, metadata={"help": "initial threshold parameter s (the paper's "
                                                                        "ResNet-50 config: -3200 for 100 epochs)"})
    threshold_decay: float | None = dataclasses.field(
        default=None, metadata={"help": "(initial, with steer) weight decay on s (None: the study's weight decay)"})
    steer: bool = dataclasses.field(
        default=True, metadata={"help": "steer the decay on s so the zeros follow the GMP ramp to the target"})

    def _setup(self, model: nn.Module) -> None:
        self.parametrize(model, lambda w: SoftThreshold(w, self.s_init))
        self.period = budget.checks(self.total_iters)

    def _extra_decay(self, weight_decay: float) -> float:
        if self.steer:
            return 0.0  # the steered decay is added in before_step
        return weight_decay if self.threshold_decay is None else self.threshold_decay

    def on_fit_start(self, trainer) -> None:
        decay = self.threshold_decay
        if decay is None:
            decay = float(trainer.optimizer.param_groups[0].get("weight_decay", 0.0))
        for p in self.parametrizations(unwrap(trainer.model)):
            if torch.isnan(p.decay):  # not resumed from a checkpoint
                p.decay.fill_(min(max(decay, DECAY[0]), DECAY[1]))
        super().on_fit_start(trainer)

    @torch.no_grad()
    def before_step(self, trainer) -> None:
        if not self.steer:
            return
        for p in self.parametrizations(unwrap(trainer.model)):
            if p.s.grad is not None:
                p.s.grad.add_(p.s * p.decay)

    @torch.no_grad()
    def on_step_end(self, trainer, step, loss) -> None:
        """Steering: set each layer's decay on s so that, at the current lr and momentum, s moves over the next
        HORIZON steps to logit(tau*), tau* the magnitude below which the goal's share of all prunable weights lies
        (no decay when s is there already: the loss gradient alone moves s then)."""
        t = trainer.iteration
        if not self.steer or t % self.period:
            return
        model = unwrap(trainer.model)
        weights = self.dense(model)
        lr = max(float(trainer.optimizer.param_groups[0]["lr"]), 1e-12)
        m = budget.momentum_of(trainer.optimizer)
        horizon = budget.horizon(trainer.optimizer, self.period)
        goal = budget.ramp(self.sparsity, t + horizon, self.total_iters)  # where the ramp will be
        k = round(goal * self.numel)
        tau = float(torch.cat([w.detach().abs().flatten() for w in weights]).float().kthvalue(k).values) if k else 0.0
        target = math.log(tau / (1 - tau)) if 0 < tau < 1 else (-math.inf if tau <= 0 else math.inf)
        for p in self.parametrizations(model):
            s = float(p.s)
            gap = target - s
            need = gap * (1 - m) / (lr * abs(s) * horizon) if gap > 0 and s < 0 else 0.0
            p.decay.fill_(min(max(need, DECAY[0]), DECAY[1]))

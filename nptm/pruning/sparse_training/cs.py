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
from nptm.pruning.sparse_training.base import SparseTraining, owner, register, unparametrize


class SoftMask(nn.Module):
    """Parametrization w -> w * sigmoid(beta * s) * scale, a learned score s per weight, beta a buffer."""

    def __init__(self, weight: Tensor, s_init: float, scale: float):
        super().__init__()
        self.s = nn.Parameter(torch.full_like(weight, float(s_init)).detach())
        self.register_buffer("beta", torch.ones((), dtype=weight.dtype, device=weight.device))
        self.scale = scale

    def forward(self, weight: Tensor) -> Tensor:
        return weight * (torch.sigmoid(self.beta * self.s) * self.scale)


@register(position=4)
@dataclasses.dataclass
class CS(SparseTraining):
    name: ClassVar[str] = "cs"
    paper: ClassVar[str] = "Savarese et al., NeurIPS 2020"
    reaches_sparsity: ClassVar[bool] = True
    s_init: float = dataclasses.field(default=0.0, metadata={"help": "initial mask score s"})
    penalty: float = dataclasses.field(default=1e-8, metadata={"help": "lambda of the L1 penalty on the masks"})
    beta_final: float = dataclasses.field(default=200.0, metadata={"help": "temperature beta in the last epoch"})

    @property
    def scale(self) -> float:
        return 1.0 + math.exp(-self.s_init)  # 1 / sigmoid(s_init)

    def _setup(self, model: nn.Module) -> None:
        self.epochs = math.ceil(self.total_iters / self.iters_per_epoch)
        self.parametrize(model, lambda w: SoftMask(w, self.s_init, self.scale))

    def beta_at(self, epoch: int) -> float:
        return self.beta_final ** (epoch / max(self.epochs - 1, 1))

    def _extra_decay(self, weight_decay: float) -> float:
        return 0.0

    @torch.no_grad()
    def on_epoch_start(self, trainer, epoch: int) -> None:
        for p in self.parametrizations(unwrap(trainer.model)):
            p.beta.fill_(self.beta_at(epoch))

    @torch.no_grad()
    def before_step(self, trainer) -> None:
        for p in self.parametrizations(unwrap(trainer.model)):
            sig = torch.sigmoid(p.beta * p.s)
            push = sig * (1 - sig) * (p.beta * self.penalty * self.scale)
            if p.s.grad is None:
                p.s.grad = push
            else:
                p.s.grad.add_(push)

    def _own_weights(self, model: nn.Module, used: list[Tensor]) -> list[Tensor]:
        """The hard mask s > 0 (the forward's sigmoid mask has no exact zeros): CS's own reached sparsity."""
        return [w * (p.s > 0) for w, p in zip(self.dense(model), self.parametrizations(model))]

    @torch.no_grad()
    def _finalize(self, model: nn.Module) -> None:
        for n in self.names:
            module, attr = owner(model, n)
            p = module.parametrizations[attr][0]
            hard = module.parametrizations[attr].original * (p.s > 0) * self.scale
            unparametrize(module, attr, leave_parametrized=False)
            getattr(module, attr).copy_(hard)

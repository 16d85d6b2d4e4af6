"""LC (Carreira-Perpinan & Idelbayev, CVPR 2018, "'Learning-Compression' Algorithms for Neural Net Pruning"):
alternate L steps, SGD on L(w) + mu_j / 2 ||w - theta||^2, and C steps, theta = the projection of w onto the
weights with at most N - round(s * N) non-zeros (a global magnitude top-k), with mu raised by ``growth`` at every
C step. The final model is theta after a last C step (exactly round(s * N) zeros).

Defaults and departures: growth = 1.1 and 40 LC steps (UCMerced-ML/LC-model-compression's pruning example); mu0
None scales mu to the budget and its lr: mu_t = final_pull (1 - m) growth^(j - n + 1) / lr_t, so the penalty's
step lr mu / (1 - m) grows geometrically to closing ``final_pull`` = half the distance to theta per step in the
last L step, and w reaches theta by the end (the library's mu0 = 9e-5, ``--lc-mu0 9e-5``, sized for hundreds of
epochs, left the pruned weights far from 0 in 4-16 digits epochs: the projection cost 73-81 points). The budget
T is split evenly into the L steps, a C step at iteration round(j * T / steps) (the first on the
initial weights; at most one LC step per iteration); the quadratic-penalty form (the library adds Lagrange
multipliers, the augmented Lagrangian); the penalty gradient mu_j (w - theta) is added to the loss gradient before
every optimizer step, and the study's optimizer, schedule and weight decay are kept (the authors' L steps restart
SGD at a decayed lr). theta is a buffer beside each weight (``weight_lc_target``).
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from nptm.pruning.masks import unwrap
from nptm.pruning.sparse_training.base import SparseTraining, magnitude_masks, owner, register
from nptm.pruning.sparse_training.budget import momentum_of

TARGET = "_lc_target"


@register(position=5)
@dataclasses.dataclass
class LC(SparseTraining):
    name: ClassVar[str] = "lc"
    paper: ClassVar[str] = "Carreira-Perpinan & Idelbayev, CVPR 2018"
    mu0: float | None = dataclasses.field(
        default=None, metadata={"help": "penalty weight of the first L step (None: mu_t = pull_t (1 - momentum) / lr_t "
                                        "with pull_t growing to --lc-final-pull; the LC library's example: 9e-5)"})
    final_pull: float = dataclasses.field(
        default=0.5, metadata={"help": "with mu0 None: the share of the distance to theta the penalty closes per "
                                       "step in the last L step (earlier ones: / growth per step)"})
    growth: float = dataclasses.field(default=1.1, metadata={"help": "mu grows by this factor at every C step"})
    steps: int = dataclasses.field(default=40, metadata={"help": "LC steps (L step + C step) in the budget"})

    def _setup(self, model: nn.Module) -> None:
        if self.steps < 1:
            raise ValueError(f"lc: needs at least one LC step, got {self.steps}")
        n = min(self.steps, self.total_iters)
        self.starts = tuple(round(j * self.total_iters / n) for j in range(n))
        for n, w in zip(self.names, self.dense(model)):
            module, attr = owner(model, n)
            module.register_buffer(attr + TARGET, torch.empty_like(w).detach())
        self.c_step(model)

    def targets(self, model: nn.Module) -> list[Tensor]:
        return [getattr(m, a + TARGET) for m, a in (owner(model, n) for n in self.names)]

    @torch.no_grad()
    def c_step(self, model: nn.Module) -> None:
        weights = self.dense(model)
        for w, keep, theta in zip(weights, magnitude_masks(weights, self.pruned), self.targets(model)):
            torch.mul(w, keep, out=theta)

    def mu_at(self, iteration: int, lr: float = 1.0, momentum: float = 0.0) -> float:
        """mu of the L step that optimizer step ``iteration`` (0-based) belongs to, at learning rate ``lr``."""
        j = bisect.bisect_right(self.starts, iteration) - 1
        if self.mu0 is not None:
            return self.mu0 * self.growth ** j
        return self.final_pull * (1 - momentum) * self.growth ** (j - len(self.starts) + 1) / max(lr, 1e-12)

    def on_step_end(self, trainer, step, loss) -> None:
        if trainer.iteration in self.starts:
            self.c_step(unwrap(trainer.model))

    @torch.no_grad()
    def before_step(self, trainer) -> None:
        model = unwrap(trainer.model)
        mu = self.mu_at(trainer.iteration, trainer.optimizer.param_groups[0]["lr"], momentum_of(trainer.optimizer))
        for w, theta in zip(self.dense(model), self.targets(model)):
            if w.grad is not None:
                w.grad.add_(w - theta, alpha=mu)

    @torch.no_grad()
    def _finalize(self, model: nn.Module) -> None:
        self.c_step(model)
        for n, w, theta in zip(self.names, self.dense(model), self.targets(model)):
            w.copy_(theta)
            module, attr = owner(model, n)
            del module._buffers[attr + TARGET]

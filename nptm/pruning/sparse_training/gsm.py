"""GSM (Ding, Ding, Zhou, Guo, Han & Liu, NeurIPS 2019, "Global Sparse Momentum SGD for Pruning Very Deep Neural
Networks"): before every optimizer step, rank all prunable weights by |w * dL/dw|; only the top Q = N - round(s * N)
keep their loss gradient, the others get none, so the momentum update moves them by weight decay alone and they
drift to zero. At the end the round(s * N) smallest weights by magnitude are pruned.

Defaults and departures: ``momentum`` None keeps the study's (the paper's 0.98, DingXiaoH/GSM-SGD's ImageNet and
``gsm_rc56.py`` CIFAR value, with an lr tuned for 0.9 is a 5x larger step: ``--gsm-momentum 0.98``). ``pull`` 8:
the weights outside the top Q get the extra decay c = pull (1 - m) / sum_t lr_t - weight decay, so they shrink by
about e^-8 within the budget whatever its length (the paper's decay is sized for hundreds of epochs; with the
study's 1e-4 in 4-16 digits epochs the projection cost 25-44 points; ``--gsm-pull 0``: the decay alone). The
study's optimizer (Nesterov SGD by default; the authors use plain momentum), schedule and weight decay are kept. The
top Q is exact (one global top-k, ties by position); the authors' code keeps every weight scoring >= the Q-th.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from nptm import ops
from nptm.pruning.masks import unwrap
from nptm.pruning.sparse_training.base import SparseTraining, register
from nptm.pruning.sparse_training.budget import decay_budget


@register(position=0)
@dataclasses.dataclass
class GSM(SparseTraining):
    name: ClassVar[str] = "gsm"
    paper: ClassVar[str] = "Ding et al., NeurIPS 2019"
    momentum: float | None = dataclasses.field(
        default=None, metadata={"help": "SGD momentum during GSM (None: the optimizer's own; the paper: 0.98)"})
    pull: float = dataclasses.field(
        default=8.0, metadata={"help": "the weights outside the top Q shrink by about e^-PULL over the budget (their "
                                       "decay is raised to reach it); 0: the weight decay alone"})

    def on_fit_start(self, trainer) -> None:
        if self.momentum is not None:
            for group in trainer.optimizer.param_groups:
                if "momentum" in group:
                    group["momentum"] = self.momentum
        wd = float(trainer.optimizer.param_groups[0].get("weight_decay", 0.0))
        self.decay = max(0.0, self.pull / decay_budget(trainer, self.total_iters) - wd) if self.pull > 0 else 0.0
        super().on_fit_start(trainer)

    @torch.no_grad()
    def before_step(self, trainer) -> None:
        weights = self.dense(unwrap(trainer.model))
        scores = [(w * w.grad).abs() if w.grad is not None else torch.zeros_like(w) for w in weights]
        keep = ops.global_magnitude_masks(weights, self.pruned, scores=scores)
        for w, m in zip(weights, keep):
            if w.grad is not None:
                w.grad.mul_(m)
                if self.decay:
                    w.grad.add_(w * ~m, alpha=self.decay)

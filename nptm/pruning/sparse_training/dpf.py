"""DPF (Lin, Stich, Barba, Dmitriev & Jaggi, ICLR 2020, "Dynamic Model Pruning with Feedback"): the forward pass
and the gradient are taken at the masked weights w * m, the update is applied to the dense w (error feedback:
pruned weights keep learning and can come back); m is recomputed from scratch, by global magnitude over the
dense weights, every ``every`` iterations at the sparsity of GMP's cubic ramp (``nptm.pruning.gradual.GMPRamp``).

Defaults and departures: ``every`` = 16 iterations (the paper; ZIB-IOL/BIMP ``DPF``); the ramp over ``window``
(fractions of the budget, default nptm's GMP window 0.1-0.75) with one step per epoch unless ``ramp_steps``; a
ramp step also recomputes m at once. Weight decay acts on the dense weights. The final model is w * m with the
last mask (exactly round(s * N) zeros), as the 2023 paper's code ends.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from nptm.pruning.gradual import GMPRamp
from nptm.pruning.masks import unwrap
from nptm.pruning.sparse_training.base import register
from nptm.pruning.sparse_training.masked import MaskedTraining


@register(position=1)
@dataclasses.dataclass
class DPF(MaskedTraining):
    name: ClassVar[str] = "dpf"
    paper: ClassVar[str] = "Lin et al., ICLR 2020"
    every: int = dataclasses.field(default=16, metadata={"help": "recompute the mask every N iterations"})
    window: tuple[float, float] = dataclasses.field(
        default=(0.1, 0.75), metadata={"help": "the sparsity ramps from fraction START to END of the budget"})
    ramp_steps: int | None = dataclasses.field(default=None, metadata={"help": "ramp steps (default: one per epoch)"})

    def _setup(self, model: nn.Module) -> None:
        if self.every < 1:
            raise ValueError(f"dpf: the mask period must be >= 1 iteration, got {self.every}")
        try:
            self.ramp = GMPRamp.over(self.sparsity, self.total_iters, *self.window, steps=self.ramp_steps,
                                     iters_per_epoch=self.iters_per_epoch)
        except ValueError as e:
            raise ValueError(f"dpf: {e}") from None
        super()._setup(model)
        self.update_masks(model, self.ramp.level_at(0))

    def on_step_end(self, trainer, step, loss) -> None:
        t = trainer.iteration
        if t % self.every == 0 or self.ramp.sparsity_at(t) is not None:
            self.update_masks(unwrap(trainer.model), self.ramp.level_at(t))

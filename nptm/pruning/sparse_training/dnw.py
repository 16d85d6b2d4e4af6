"""DNW (Wortsman, Farhadi & Rastegari, NeurIPS 2019, "Discovering Neural Wirings"), as the 2023 paper runs it for
static sparsity: the forward pass uses the top-k weights by magnitude, k = N - round(s * N) fixed from the first
iteration; the backward pass sends the gradient of the masked weights to every weight (straight through), so
pruned weights keep learning and re-enter the top-k when they grow.

Defaults and departures: one global top-k over all prunable weights, recomputed after every optimizer step (the
2023 paper's code, ZIB-IOL/BIMP ``DNW``); the DNW layer in RAIVNLab/STR ``utils/conv_type.py`` (``ChooseEdges``)
takes the top-k of each layer separately. The final model is the last masked weights (exactly round(s * N) zeros).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from nptm.pruning.masks import unwrap
from nptm.pruning.sparse_training.base import register
from nptm.pruning.sparse_training.masked import MaskedTraining


@register(position=2)
@dataclasses.dataclass
class DNW(MaskedTraining):
    name: ClassVar[str] = "dnw"
    paper: ClassVar[str] = "Wortsman et al., NeurIPS 2019"

    def _setup(self, model: nn.Module) -> None:
        super()._setup(model)
        self.update_masks(model, self.sparsity)

    def on_step_end(self, trainer, step, loss) -> None:
        self.update_masks(unwrap(trainer.model), self.sparsity)

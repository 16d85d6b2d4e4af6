"""STR (Kusupati, Ramanujan, Somani, Wortsman, Jain, Kakade & Farhadi, ICML 2020, "Soft Threshold Weight
Reparameterization for Learnable Sparsity"): every prunable layer computes with
W_eff = sign(W) * ReLU(|W| - sigmoid(s)), one learned scalar s per layer; weight decay on s pulls sigmoid(s) up
from ~0, so small weights fall under the threshold. The sparsity is reached (it depends on ``s_init``, the weight
decay and the budget), not set: ``finish`` reports the zeros of W_eff, then projects onto the target.

Defaults and departures: ``s_init`` = -3200 (RAIVNLab/STR ``configs/largescale/resnet50-str.yaml``; tune it and the
weight decay for the sparsity you want, as the paper's appendix does per sparsity); ``threshold_decay`` None = the
study's weight decay on s (STR's ``--st-decay`` default); sigmoid as g (the code's ``sparse_function``); the
threshold in the weights' dtype. Every prunable layer is reparametrized (STR can keep the first or last layer dense).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from nptm.pruning.sparse_training.base import SparseTraining, register


class SoftThreshold(nn.Module):
    """Parametrization W -> sign(W) * relu(|W| - sigmoid(s)) with a learned scalar s."""

    def __init__(self, weight: Tensor, s_init: float):
        super().__init__()
        self.s = nn.Parameter(torch.full((), float(s_init), dtype=weight.dtype, device=weight.device))

    def forward(self, weight: Tensor) -> Tensor:
        return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(self.s))


@register(position=3)
@dataclasses.dataclass
class STR(SparseTraining):
    name: ClassVar[str] = "str"
    paper: ClassVar[str] = "Kusupati et al., ICML 2020"
    reaches_sparsity: ClassVar[bool] = True
    s_init: float = dataclasses.field(default=-3200.0, metadata={"help": "initial threshold parameter s"})
    threshold_decay: float | None = dataclasses.field(
        default=None, metadata={"help": "weight decay on s (None: the study's weight decay)"})

    def _setup(self, model: nn.Module) -> None:
        self.parametrize(model, lambda w: SoftThreshold(w, self.s_init))

    def _extra_decay(self, weight_decay: float) -> float:
        return weight_decay if self.threshold_decay is None else self.threshold_decay

"""``--optimizer``: the optimizers a study trains with, registered by name.

Each is built as ``factory(params, lr=, momentum=, weight_decay=)``. ``momentum`` is AdamW's beta1, so
CLR's momentum cycling (``nptm.schedules.set_lr``) moves it as it moves SGD's momentum.
"""
from __future__ import annotations

from typing import Iterable

import torch

from nptm.utils.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("nesterov")
def nesterov(params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the SPEC's CIFAR/ImageNet recipe)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with plain (heavy-ball) momentum (ffcv-imagenet's recipe)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, beta1 = momentum, beta2 = 0.999, decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter] | Iterable[dict], *, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """``params``: parameters, or parameter groups (dicts; a group's own ``weight_decay`` wins)."""
    return OPTIMIZERS[name](params, lr=lr, momentum=momentum, weight_decay=weight_decay)

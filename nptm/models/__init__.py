"""Model registry: CIFAR ResNets and VGG-16, torchvision ResNets, a small digits CNN; param/MAC counts."""
from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

from nptm.models.chain import CifarVGG, ConvChain, DigitsNet
from nptm.models.cifar_resnet import BasicBlock, CifarResNet
from nptm.models.counting import count_flops, count_params
from nptm.models.presets import FILTER_PRESETS, filter_preset

__all__ = ["MODELS", "FILTER_PRESETS", "filter_preset", "build_model", "reinitialize", "count_params", "count_flops", "CifarResNet", "CifarVGG", "DigitsNet", "ConvChain", "BasicBlock"]


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        return model

    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "digits_net": lambda num_classes, in_channels=1: DigitsNet(num_classes, in_channels),
    **{f"resnet{d}": (lambda num_classes, in_channels=3, d=d: CifarResNet(d, num_classes, in_channels)) for d in (20, 32, 56, 110)},
    "vgg16": lambda num_classes, in_channels=3: CifarVGG(num_classes, in_channels),
    **{f"resnet{d}": _torchvision(f"resnet{d}") for d in (18, 34, 50)},
}


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model from ``MODELS``; resnet18/34/50 are torchvision's (weights=None)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choices: {', '.join(MODELS)}")
    return MODELS[name](num_classes, in_channels)


def reinitialize(model: nn.Module) -> nn.Module:
    """Re-draw every weight with the model's own init (for Scratch-E/B baselines on a pruned architecture).

    nptm models use their reference init; others get torchvision's ResNet init (Kaiming-normal fan_out
    convs) and every other layer's own ``reset_parameters`` (BN 1/0, LayerNorm, linear, PReLU).
    """
    if hasattr(model, "reset_parameters"):
        model.reset_parameters()
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model

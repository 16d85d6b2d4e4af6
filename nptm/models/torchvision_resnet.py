"""torchvision's ImageNet ResNet-18/34/50 as ``resnet18``/``resnet34``/``resnet50``, with any number of input
channels (a new Kaiming-initialised stem when it is not 3)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from nptm.models.registry import MODELS


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        import torchvision  # here, not at import: it costs about two seconds

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        return model

    return build


for _depth in (18, 34, 50):
    MODELS.register(f"resnet{_depth}", _torchvision(f"resnet{_depth}"))

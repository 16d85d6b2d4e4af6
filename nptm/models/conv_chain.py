"""Plain conv chains (the base of DigitsNet and the CIFAR VGG): ``features`` (conv-bn-relu and pools), global
average pool, ``classifier``."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn


def conv_bn_relu_features(cfg: Sequence[int | str], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            in_channels = int(v)
    return nn.Sequential(*layers)


class ConvChain(nn.Module):
    """features -> global average pool -> flatten -> classifier."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean((2, 3)))

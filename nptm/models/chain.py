"""Plain conv chains: ``features`` (conv-bn-relu and pools), global average pool, ``classifier``.

CIFAR VGG-16 with BN follows Liu et al.'s l1-norm-pruning code (cfg 64,64,M,...,512; classifier
Linear(512,512)-BN-ReLU-Linear); its AvgPool2d(2) on the 2x2 map is written as a global average
pool, identical at 32x32 and valid at other sizes. ``digits_net`` is a small chain for 8x8 digits.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from nptm.models.presets import FILTER_PRESETS

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
DIGITS_CFG = (16, 32, "M", 64)


def _features(cfg: Sequence[int | str], in_channels: int) -> nn.Sequential:
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


class CifarVGG(ConvChain):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, cfg: Sequence[int | str] = VGG16_CFG):
        last = [v for v in cfg if v != "M"][-1]
        super().__init__(
            _features(cfg, in_channels),
            nn.Sequential(nn.Linear(int(last), 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference init: conv N(0, 2/(k*k*out)), BN2d weight 0.5 / bias 0, linear N(0, 0.01) / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


class DigitsNet(ConvChain):
    """conv16-bn-relu, conv32-bn-relu, maxpool, conv64-bn-relu, GAP, fc: 23k conv weights, fast on CPU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, cfg: Sequence[int | str] = DIGITS_CFG):
        last = [v for v in cfg if v != "M"][-1]
        super().__init__(_features(cfg, in_channels), nn.Sequential(nn.Linear(int(last), num_classes)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) convs, BN 1/0, PyTorch's default linear init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.Linear)):
                m.reset_parameters()


def _vgg16_a(model: nn.Module) -> dict[str, float]:
    """VGG-16-pruned-A: conv 1 and convs 8-13 lose half their filters."""
    convs = [f"features.{n}" for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    return {n: 0.5 if i == 0 or i >= 7 else 0.0 for i, n in enumerate(convs)}


FILTER_PRESETS.register("vgg16", {"A": _vgg16_a})

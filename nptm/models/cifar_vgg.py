"""CIFAR VGG-16 with BatchNorm, as Liu et al.'s l1-norm-pruning code (cfg 64,64,M,...,512; classifier
Linear(512,512)-BN-ReLU-Linear); its AvgPool2d(2) on the 2x2 map is written as a global average pool, identical
at 32x32 and valid at other sizes. Registered as ``vgg16`` with PFEC's VGG-16-pruned-A preset."""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from nptm.models.conv_chain import ConvChain, conv_bn_relu_features
from nptm.models.presets import FILTER_PRESETS
from nptm.models.registry import MODELS

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class CifarVGG(ConvChain):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, cfg: Sequence[int | str] = VGG16_CFG):
        last = [v for v in cfg if v != "M"][-1]
        super().__init__(
            conv_bn_relu_features(cfg, in_channels),
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


def _vgg16_a(model: nn.Module) -> dict[str, float]:
    """VGG-16-pruned-A: conv 1 and convs 8-13 lose half their filters."""
    convs = [f"features.{n}" for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    return {n: 0.5 if i == 0 or i >= 7 else 0.0 for i, n in enumerate(convs)}


MODELS.register("vgg16", lambda num_classes, in_channels=3: CifarVGG(num_classes, in_channels))
FILTER_PRESETS.register("vgg16", {"A": _vgg16_a})

"""DigitsNet: a small conv chain for scikit-learn's 8x8 digits (the default study's model, ``digits_net``)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from nptm.models.conv_chain import ConvChain, conv_bn_relu_features
from nptm.models.registry import MODELS

DIGITS_CFG = (16, 32, "M", 64)


@MODELS.register("digits_net")
class DigitsNet(ConvChain):
    """conv16-bn-relu, conv32-bn-relu, maxpool, conv64-bn-relu, GAP, fc: 23k conv weights, fast on CPU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, cfg: Sequence[int | str] = DIGITS_CFG):
        last = [v for v in cfg if v != "M"][-1]
        super().__init__(conv_bn_relu_features(cfg, in_channels), nn.Sequential(nn.Linear(int(last), num_classes)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) convs, BN 1/0, PyTorch's default linear init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.Linear)):
                m.reset_parameters()

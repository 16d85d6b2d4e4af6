"""CIFAR ResNets (He et al. 2016, depth 6n+2) with option-A shortcuts, as in akamaster/pytorch_resnet_cifar10.

Each basic block is conv1-bn1-relu-conv2-bn2 (+ shortcut) - relu. ``widths`` gives the output width of
every block's conv1 (the only conv that filter pruning shrinks: the zero-padding shortcuts keep the
residual widths 16/32/64 whole).

PFEC presets (layer numbers as in Liu et al.'s res56prune.py / res110prune.py: every nn.Conv2d in module
order, from 1; block b's conv1 is layer 2b + 2): each block's conv1 at its stage's ratio unless skipped.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from nptm.models.presets import FILTER_PRESETS, Preset, conv_ids
from nptm.models.registry import MODELS


class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the channels evenly on both sides (no parameters)."""

    def __init__(self, stride: int, pad: int):
        super().__init__()
        self.stride, self.pad = stride, pad

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = PadShortcut(stride, (planes - in_planes) // 2) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] | None = None):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        planes = [16] * n + [32] * n + [64] * n
        widths = list(planes if widths is None else widths)
        if len(widths) != 3 * n:
            raise ValueError(f"widths needs {3 * n} entries (one per block), got {len(widths)}")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes, blocks = 16, []
        for b, (p, w) in enumerate(zip(planes, widths)):
            blocks.append(BasicBlock(in_planes, p, w, 2 if b in (n, 2 * n) else 1))
            in_planes = p
        self.layer1, self.layer2, self.layer3 = (nn.Sequential(*blocks[i * n : (i + 1) * n]) for i in range(3))
        self.fc = nn.Linear(64, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference init: Kaiming-normal (fan_in) conv and linear weights, BN 1/0, default linear bias."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if isinstance(m, nn.Linear):
                    bound = 1 / m.in_features**0.5
                    nn.init.uniform_(m.bias, -bound, bound)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
                m.reset_running_stats()

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def pfec_preset(skip: tuple[int, ...], stage_ratios: tuple[float, float, float]) -> Preset:
    def ratios(model: nn.Module) -> dict[str, float]:
        ids, out = conv_ids(model), {}
        for stage, r in zip(("layer1", "layer2", "layer3"), stage_ratios):
            for b in range(len(model.get_submodule(stage))):
                name = f"{stage}.{b}.conv1"
                out[name] = 0.0 if ids[name] in skip else r
        return out

    return ratios


for _depth in (20, 32, 56, 110):
    MODELS.register(f"resnet{_depth}", lambda num_classes, in_channels=3, d=_depth: CifarResNet(d, num_classes, in_channels))
FILTER_PRESETS.register("resnet56", {
    "A": pfec_preset((16, 20, 38, 54), (0.1, 0.1, 0.1)),
    "B": pfec_preset((16, 18, 20, 34, 38, 54), (0.6, 0.3, 0.1)),
})
FILTER_PRESETS.register("resnet110", {  # A, B: Li et al.; C, D: the ICLR 2021 study's extra configs
    "A": pfec_preset((36,), (0.5, 0.0, 0.0)),
    "B": pfec_preset((36, 38, 74), (0.5, 0.4, 0.3)),
    "C": pfec_preset((36, 38, 74), (0.5, 0.5, 0.5)),
    "D": pfec_preset((36, 38, 74), (0.5, 0.6, 0.7)),
})

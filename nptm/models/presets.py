"""Named per-layer filter-pruning ratios (PFEC's configs, Li et al. 2016): each model family registers its
own as ``{config: model -> {layer name: ratio}}``, usable as ``prune_channels(..., ratios=preset)``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from nptm.utils.registry import Registry

Preset = Callable[[nn.Module], dict[str, float]]
FILTER_PRESETS: Registry[dict[str, Preset]] = Registry("filter preset", package="nptm.models")


def filter_preset(model: str, config: str) -> Preset:
    """The preset ``config`` of ``model``; a ValueError lists the configs there are."""
    configs = FILTER_PRESETS[model] if model in FILTER_PRESETS else {}
    if config not in configs:
        raise ValueError(f"no PFEC config {config!r} for {model}; configs: {', '.join(configs) or 'none (use a float ratio)'}")
    return configs[config]


def conv_ids(model: nn.Module) -> dict[str, int]:
    """Conv name -> 1-based index among all nn.Conv2d modules in module order (the PFEC papers' layer numbers)."""
    return {n: i + 1 for i, n in enumerate(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))}

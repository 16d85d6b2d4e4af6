"""Max-pooling through channels_last (``ChannelsLastMaxPool2d``) where measured faster, at every batch size."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nptm.sparse.choose import time_pair
from nptm.sparse.modules import ChannelsLastMaxPool2d


def channels_last_pooling(model: nn.Module, batches: dict[int, tuple], rounds: int = 7) -> dict[str, nn.Module]:
    """Name -> ``ChannelsLastMaxPool2d`` for each ``nn.MaxPool2d`` (no indices) of ``model`` that runs faster so
    on its own NCHW input at every batch size of ``batches`` (batch size -> model inputs)."""
    pools = {n: m for n, m in model.named_modules() if type(m) is nn.MaxPool2d and not m.return_indices}
    forms = {n: ChannelsLastMaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode) for n, m in pools.items()}
    faster: dict[str, list[bool]] = {n: [] for n in pools}
    hooks = []
    for name, module in pools.items():
        def hook(mod, args, name=name):
            x = args[0] if args else None
            if isinstance(x, Tensor) and x.dim() == 4 and x.is_contiguous() and x.is_floating_point():
                dense, cl = time_pair(lambda: mod.forward(x), lambda: forms[name](x), rounds)
                faster[name].append(cl < dense)

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for inputs in batches.values() if hooks else ():
                model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return {n: forms[n] for n, f in faster.items() if f and all(f)}

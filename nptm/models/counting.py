"""Parameter and multiply-accumulate (MAC) counts."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) entries over all parameters."""
    params = list(model.parameters())
    if not params:
        return 0, 0
    nonzero = torch.stack([p.detach().count_nonzero().to("cpu") for p in params]).sum()
    return sum(p.numel() for p in params), int(nonzero)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Sequence[int], effective: bool = False) -> int:
    """MACs of one sample through every conv and linear layer (other layers are not counted).

    ``input_shape`` is one sample's shape, e.g. (3, 32, 32); a leading batch dimension is also
    accepted and divided out. Conv: out_elements * in_channels/groups * kernel volume; linear:
    out_elements * in_features. ``effective=True`` scales each layer by its weight density
    (non-zero / numel), the cost of a sparse kernel that skips pruned weights. Runs one zero batch
    in eval mode (BN statistics untouched) and restores the training flag.
    """
    shape = tuple(int(s) for s in input_shape)
    batch = shape[0] if len(shape) == 4 else 1
    if len(shape) == 3:
        shape = (1, *shape)
    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    counts: list[tuple[nn.Module, int]] = []

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Linear):
            per_out = module.in_features
        else:
            per_out = module.in_channels // module.groups * int(torch.tensor(module.kernel_size).prod())
        counts.append((module, output.numel() // batch * per_out))

    handles = [m.register_forward_hook(hook) for m in layers]
    ref = next(model.parameters(), None)
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(shape, device=ref.device if ref is not None else "cpu", dtype=ref.dtype if ref is not None else torch.float32))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not effective:
        return sum(c for _, c in counts)
    density = {m: m.weight.count_nonzero() / m.weight.numel() for m in layers}
    return int(round(float(sum(c * density[m].double() for m, c in counts)))) if counts else 0

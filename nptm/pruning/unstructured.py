"""Unstructured pruners (global magnitude, per-layer magnitude, global random) and IMP step sizes."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from nptm import ops
from nptm.pruning.masks import Masks, named_parameters, prunable_weights

Pruner = Callable[[Sequence[Tensor], float, Sequence[Tensor], "torch.Generator | None"], list[Tensor]]


def _magnitude(weights: Sequence[Tensor], amount: float, masks: Sequence[Tensor], generator) -> list[Tensor]:
    """One global threshold on |w|: the k = round(amount * alive) smallest alive weights go."""
    return ops.global_magnitude_masks(weights, amount, masks=masks)


def _layer_magnitude(weights: Sequence[Tensor], amount: float, masks: Sequence[Tensor], generator) -> list[Tensor]:
    """Per layer, the round(amount * alive_in_layer) smallest alive weights go."""
    return [ops.global_magnitude_masks([w], amount, masks=[m])[0] for w, m in zip(weights, masks)]


def _random(weights: Sequence[Tensor], amount: float, masks: Sequence[Tensor], generator) -> list[Tensor]:
    """Global, uniform random scores (from ``generator`` when given): same count as ``magnitude``."""
    dev = generator.device if generator is not None else torch.device("cpu")
    scores = [torch.rand(w.shape, generator=generator, device=dev).to(w.device) for w in weights]
    return ops.global_magnitude_masks(weights, amount, masks=masks, scores=scores)


PRUNERS: dict[str, Pruner] = {"magnitude": _magnitude, "layer_magnitude": _layer_magnitude, "random": _random}


@torch.no_grad()
def prune_unstructured(
    model: nn.Module,
    method: str,
    amount: float,
    *,
    masks: Masks | None = None,
    include_linear: bool = False,
    generator: torch.Generator | None = None,
) -> Masks:
    """Prune ``amount`` of the REMAINING prunable weights (k = round(amount * alive)) with ``method``.

    Weights pruned in ``masks`` stay pruned; given ``masks`` also choose the prunable weights (else
    ``prunable_weights(model, include_linear)``). The returned masks (old and new prunes together) are
    already applied to the model's weights; call ``masks.apply(model, optimizer)`` to clear an
    optimizer's buffers too.
    """
    if method not in PRUNERS:
        raise ValueError(f"unknown pruner {method!r}; choices: {', '.join(PRUNERS)}")
    if masks is None:
        params = prunable_weights(model, include_linear)
        masks = Masks.ones(params)
    else:  # the masks choose what is prunable (e.g. Masks.for_model(model, types=...))
        named = named_parameters(model)
        missing = [n for n in masks if n not in named]
        if missing:
            raise ValueError(f"masks name no parameter of {type(model).__name__}: {missing}")
        params = {n: named[n] for n in masks}
    if not params:
        raise ValueError(f"{type(model).__name__} has no prunable weights")
    names = list(params)
    weights = [params[n] for n in names]
    nan = torch.stack([w.isnan().any().cpu() for w in weights])
    if bool(nan.any()):
        raise ValueError(f"NaN weights in {[n for n, bad in zip(names, nan.tolist()) if bad]}")
    new = Masks(dict(zip(names, PRUNERS[method](weights, amount, [masks[n] for n in names], generator))))
    new.apply(model)
    return new


def iterative_amounts(sparsity: float, cycles: int) -> list[float]:
    """IMP step sizes: each of the ``cycles`` steps prunes 1 - (1 - s)^(1/n) of the remaining weights."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"cycles must be a positive int, got {cycles!r}")
    return [1 - (1 - sparsity) ** (1 / cycles)] * cycles

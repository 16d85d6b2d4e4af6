"""Unstructured pruning through criterion scores: one global top-k (magnitude, LAMP, random, ...), a top-k per
layer, on the alive weights, with ``ops.global_magnitude_masks``, of single weights or of the blocks of a
pattern (``nptm.pruning.patterns``: Kx1 blocks, N:M groups); IMP step sizes."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from nptm.pruning.criteria import CRITERIA, Criterion
from nptm.pruning.criteria.base import check_finite
from nptm.pruning.criteria.magnitude import Magnitude
from nptm.pruning.masks import Masks, named_parameters, prunable_weights
from nptm.pruning.patterns import Blocks, as_pattern, layer_groups


class LayerCollapse(ValueError):
    """A pruning step would empty whole layers (``layers``) or push them past ``max_layer_sparsity``."""

    def __init__(self, message: str, layers: list[str]):
        super().__init__(message)
        self.layers = layers


def criterion_instance(criterion: str | Criterion) -> Criterion:
    """A registered criterion by name (one-line error listing the choices), or the instance itself."""
    return criterion if isinstance(criterion, Criterion) else CRITERIA[criterion]()


def prune_unstructured(
    model: nn.Module,
    criterion: str | Criterion,
    amount: float | int,
    *,
    masks: Masks | None = None,
    include_linear: bool = False,
    generator: torch.Generator | None = None,
    loader: Iterable | None = None,
    per_layer: bool = False,
    pattern: str | None = None,
    spare_classifier: bool = False,
    max_layer_sparsity: float | None = None,
) -> Masks:
    """Prune ``amount`` of the REMAINING prunable weights (k = round(amount * alive)) with the lowest
    ``criterion`` scores: one global top-k, or with ``per_layer`` round(amount * alive_in_layer) per layer.

    Weights pruned in ``masks`` stay pruned; given ``masks`` also choose the prunable weights (else
    ``prunable_weights(model, include_linear)``). The returned masks (old and new prunes together) are
    already applied to the model's weights; call ``masks.apply(model, optimizer)`` to clear an
    optimizer's buffers too. ``loader``: calibration batches for data-aware criteria. ``pattern``
    (``nptm.pruning.patterns``): "1x1" or None single weights; "Kx1" whole blocks of K consecutive output channels
    at one input weight, scored by the sum of their scores, k = round(amount * alive blocks); "N:M" the N lowest
    of every M consecutive input weights of each layer (``amount`` is then ignored).

    ``spare_classifier`` leaves the last ``nn.Linear`` unpruned (default False, the papers' practice: the 2021 code
    prunes convolutions only, the 2023 code every conv and linear layer). A layer that would lose its last weight is
    refused (ValueError naming it) unless ``max_layer_sparsity`` is given: then every layer keeps at least
    ceil((1 - max_layer_sparsity) * size) of its weights (its best-scored ones; 1.0 allows empty layers).
    """
    pat = as_pattern(pattern)
    crit = criterion_instance(criterion)
    if crit.structured:
        raise ValueError(f"criterion {type(crit).__name__} scores channels; use structured pruning")
    if masks is None:
        params = prunable_weights(model, include_linear, spare_classifier=spare_classifier)
        masks = Masks.ones(params)
    else:  # the masks choose what is prunable (e.g. Masks.for_model(model, types=...))
        named = named_parameters(model)
        missing = [n for n in masks if n not in named]
        if missing:
            raise ValueError(f"masks name no parameter of {type(model).__name__}: {missing}")
        params = {n: named[n] for n in masks}
    if not params:
        raise ValueError(f"{type(model).__name__} has no prunable weights")
    check_finite(params)
    names = list(params)
    weights = [params[n] for n in names]
    old = [masks[n] for n in names]
    if isinstance(crit, Magnitude):  # |w|, computed by the pattern (the kernel's own for single weights)
        scores = None
    else:
        with torch.no_grad() if not crit.needs_data else torch.enable_grad():
            by_name = crit.scores(model, params, loader=loader, generator=generator)
        scores = [by_name[n] for n in names]
    floor = _layer_floor(weights, old, max_layer_sparsity)
    if floor is not None and isinstance(pat, Blocks):
        scores = _protect([w.detach().abs() for w in weights] if scores is None else scores, old, floor)
    with torch.no_grad():
        groups = layer_groups(model, names) if isinstance(pat, Blocks) and pat.k > 1 else [1] * len(names)
        new = pat.masks(weights, amount, scores=scores, old=old, groups=groups, per_layer=per_layer)
        everything = isinstance(amount, float) and amount >= 1.0  # asked for, not a collapse
        if isinstance(pat, Blocks) and not everything:
            _check_layers(names, old, new, floor, max_layer_sparsity)
        result = Masks(dict(zip(names, new)))
        result.apply(model)
    return result


def _layer_floor(weights, old, max_layer_sparsity: float | None) -> list[int] | None:
    """The weights each layer keeps at least under ``max_layer_sparsity`` (None: no floor given)."""
    if max_layer_sparsity is None or max_layer_sparsity >= 1.0:
        if max_layer_sparsity is not None and max_layer_sparsity > 1.0:
            raise ValueError(f"max_layer_sparsity must be in [0, 1], got {max_layer_sparsity}")
        return None
    if max_layer_sparsity < 0:
        raise ValueError(f"max_layer_sparsity must be in [0, 1], got {max_layer_sparsity}")
    return [min(math.ceil((1 - max_layer_sparsity) * w.numel()), int(m.count_nonzero())) for w, m in zip(weights, old)]


def _protect(scores, old, floor: list[int]) -> list[torch.Tensor]:
    """Scores with each layer's ``floor`` best alive weights raised to +inf (no top-k of the rest prunes them)."""
    out = []
    for s, m, keep in zip(scores, old, floor):
        s = s.detach().float().clone(memory_format=torch.contiguous_format)
        if keep > 0:
            alive = torch.where(m.reshape(-1), s.reshape(-1), torch.full_like(s.reshape(-1), -math.inf))
            s.view(-1)[alive.topk(keep).indices] = math.inf
        out.append(s)
    return out


def _check_layers(names, old, new, floor, max_layer_sparsity) -> None:
    """Refuse masks that empty a layer (without ``max_layer_sparsity`` 1.0) or break the floor, naming the layer."""
    if max_layer_sparsity is not None and max_layer_sparsity >= 1.0:
        return
    emptied = []
    for i, (name, o, n) in enumerate(zip(names, old, new)):
        kept = int(n.count_nonzero())
        if floor is not None and kept < floor[i]:
            raise LayerCollapse(f"pruning this much leaves {name} {kept} of its {n.numel()} weights, under "
                                f"max_layer_sparsity={max_layer_sparsity}: prune less", [name])
        if floor is None and kept == 0 and bool(o.any()):
            emptied.append(name)
    if emptied:
        raise LayerCollapse(f"pruning would remove every weight of {', '.join(emptied)}; give max_layer_sparsity "
                            "(e.g. 0.99: every layer keeps 1% of its weights), spare_classifier=True, or "
                            "max_layer_sparsity=1.0 to allow empty layers", emptied)


def iterative_amounts(sparsity: float, cycles: int) -> list[float]:
    """IMP step sizes: each of the ``cycles`` steps prunes 1 - (1 - s)^(1/n) of the remaining weights."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"cycles must be a positive int, got {cycles!r}")
    return [1 - (1 - sparsity) ** (1 / cycles)] * cycles

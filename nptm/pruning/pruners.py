"""Pruners: a criterion plus the algorithm that turns its scores into pruned weights, with the properties
the study and the CLI read (structured, prunes during training, needs calibration data).

Every registered criterion is a pruner of the same name (one global top-k for unstructured criteria,
channel pruning for structured ones), so a criterion added in one file, or by a third-party package
through the ``nptm.criteria`` entry points, is at once a ``--pruner`` choice. ``PRUNERS`` adds the pruners
that are more than a criterion: ``layer_magnitude`` (top-k per layer), GMP and SFP (during training).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nptm.pruning.criteria import CRITERIA
from nptm.pruning.masks import Masks
from nptm.pruning.unstructured import criterion_instance, prune_unstructured
from nptm.utils.registry import Registry, UnknownChoice

ALGORITHMS = {
    "global": "one top-k over the scores of all prunable weights (masks)",
    "layer": "a top-k per layer (masks)",
    "channels": "removes the lowest-scoring output channels of every prunable layer, the same ratio per layer",
    "gradual": "during training: global magnitude masks on GMP's cubic sparsity ramp (Zhu & Gupta 2017)",
    "soft_channels": "during training: zero the lowest-scoring channels every epoch, let them regrow, remove "
                     "them at the end (SFP, He et al. 2018)",
}


@dataclass(frozen=True)
class Pruner:
    name: str
    criterion: str  # a CRITERIA name
    algorithm: str  # an ALGORITHMS key

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown pruning algorithm {self.algorithm!r}; choices: {', '.join(ALGORITHMS)}")

    @property
    def structured(self) -> bool:
        """Physically removes channels (the pruned model is smaller) instead of masking weights."""
        return self.algorithm in ("channels", "soft_channels")

    @property
    def during_training(self) -> bool:
        """Prunes while the network trains, within the total budget (GMP, SFP) instead of after it."""
        return self.algorithm in ("gradual", "soft_channels")

    @property
    def random(self) -> bool:
        """A random baseline (random scores) rather than a methodical criterion."""
        return CRITERIA[self.criterion].random

    @property
    def needs_data(self) -> bool:
        """Its criterion scores with calibration batches."""
        return CRITERIA[self.criterion].needs_data

    def prune(self, model: nn.Module, amount: float | str, *, masks: Masks | None = None, include_linear: bool = False,
              generator: torch.Generator | None = None, loader: Iterable | None = None,
              arch: str | None = None) -> tuple[nn.Module, Masks | None]:
        """(pruned copy of ``model``, its masks; None for structured pruners). ``amount``: the fraction of the
        remaining weights, or the per-layer channel ratio (or a named preset) for structured pruners.
        During-training pruners prune here as their last step does (GMP: global magnitude; SFP: removal)."""
        if self.structured:
            keep = select_channels(model, self.criterion, amount, arch=arch, loader=loader, generator=generator)
            return shrink_channels(model, keep, arch=arch), None
        pruned = copy.deepcopy(model)
        new = prune_unstructured(pruned, self.criterion, amount, masks=masks, include_linear=include_linear,
                                 generator=generator, loader=loader, per_layer=self.algorithm == "layer")
        return pruned, new


class PrunerRegistry(Registry[Pruner]):
    """The registered pruners after one pruner per criterion that no registered pruner is named after."""

    def _all(self) -> dict[str, Pruner]:
        out = {name: Pruner(name, name, "channels" if crit.structured else "global") for name, crit in CRITERIA.items()}
        out.update(super().items())
        return out

    def names(self) -> tuple[str, ...]:
        return tuple(self._all())

    def items(self) -> list[tuple[str, Pruner]]:
        return list(self._all().items())

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __getitem__(self, name: str) -> Pruner:
        try:
            return self._all()[name]
        except KeyError:
            raise UnknownChoice(f"unknown pruner {name!r}; choices: {', '.join(self.names())}") from None


PRUNERS = PrunerRegistry("pruner")
for _p in (Pruner("layer_magnitude", "magnitude", "layer"), Pruner("gmp", "magnitude", "gradual"),
           Pruner("sfp", "l2_filters", "soft_channels")):
    PRUNERS.register(_p.name, _p)


# -- channels (until the structured engine: the per-architecture filter groups of nptm.pruning.filters) --------
def select_channels(model: nn.Module, criterion, ratio: float | str, *, arch: str | None,
                    loader: Iterable | None = None, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Layer name -> sorted indices of the kept output channels: the int(C * (1 - ratio)) highest scores
    (ties keep the lower index)."""
    from nptm.pruning.filters import filter_counts

    counts = filter_counts(model, arch, ratio)
    params = {f"{n}.weight": model.get_submodule(n).weight for n in counts}
    crit = criterion_instance(criterion)
    with torch.no_grad() if not crit.needs_data else torch.enable_grad():
        scores = crit.scores(model, params, loader=loader, generator=generator)
    return {n: torch.sort(scores[f"{n}.weight"], descending=True, stable=True).indices[:k].sort().values
            for n, k in counts.items()}


def shrink_channels(model: nn.Module, keep: dict[str, Tensor], *, arch: str | None) -> nn.Module:
    """A new model keeping only ``keep[layer]`` output channels (and what consumes them)."""
    from nptm.pruning.filters import shrink_filters

    return shrink_filters(model, arch, keep)


@torch.no_grad()
def zero_channels_(model: nn.Module, keep: dict[str, Tensor]) -> None:
    """Zero, in place, the output channels of each layer in ``keep`` that it does not keep (SFP's soft prune)."""
    for name, idx in keep.items():
        w = model.get_submodule(name).weight
        dropped = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        dropped[idx.to(w.device)] = False
        w[dropped] = 0

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
from nptm.pruning.sparse_training import SPARSE_TRAINING
from nptm.pruning.structured.engine import prune_channels, select_channels
from nptm.pruning.structured.graph import CLASSIFIER, trace_channels
from nptm.pruning.unstructured import prune_unstructured
from nptm.utils.registry import Registry, UnknownChoice

ALGORITHMS = {
    "global": "one top-k over the scores of all prunable weights (masks)",
    "layer": "a top-k per layer (masks)",
    "channels": "removes the lowest-scoring channels of every channel group (scores summed over its producing "
                "layers; nptm.pruning.structured), the same ratio per group",
    "gradual": "during training: global magnitude masks on GMP's cubic sparsity ramp (Zhu & Gupta 2017)",
    "soft_channels": "during training: zero the lowest-scoring channels every epoch, let them regrow, remove "
                     "them at the end (SFP, He et al. 2018)",
    "n_m": "N of every M consecutive input weights of each layer (semi-structured; 2:4 is the GPU's sparse "
           "tensor-core format)",
    "sparse_training": "during training: a pruning-stable method of nptm.pruning.sparse_training (GSM, DPF, DNW, "
                       "STR, CS, LC), projected onto the target by magnitude at the end",
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
        return self.algorithm in ("gradual", "soft_channels", "sparse_training")

    @property
    def random(self) -> bool:
        """A random baseline (random scores) rather than a methodical criterion."""
        return CRITERIA[self.criterion].random

    @property
    def needs_data(self) -> bool:
        """Its criterion scores with calibration batches."""
        return CRITERIA[self.criterion].needs_data

    def prune(self, model: nn.Module, amount, *, masks: Masks | None = None, include_linear: bool = False,
              generator: torch.Generator | None = None, loader: Iterable | None = None,
              example_input: Tensor | None = None, round_to: int = 1,
              ignore=(CLASSIFIER,), pattern: str | None = None, spare_classifier: bool = False,
              max_layer_sparsity: float | None = None) -> tuple[nn.Module, Masks | None]:
        """(pruned copy of ``model``, its masks; None for structured pruners). ``amount``: the fraction of the
        remaining weights (N:M pruners: the pattern, "2:4"); for structured pruners the ratios of ``prune_channels`` (one float for every channel
        group, layer -> ratio, or a preset), with its ``example_input``, ``round_to`` and ``ignore``.
        During-training pruners prune here as their last step does (GMP: global magnitude; SFP: removal).
        ``pattern``: what unstructured pruners remove together ("4x1" blocks, ``nptm.pruning.patterns``).
        ``spare_classifier``, ``max_layer_sparsity``: ``prune_unstructured``'s (masks only)."""
        if self.structured:
            return prune_channels(model, self.criterion, amount, example_input=example_input, round_to=round_to,
                                  ignore=ignore, loader=loader, generator=generator), None
        pruned = copy.deepcopy(model)
        nm = self.algorithm == "n_m"
        pattern = amount if nm else pattern
        new = prune_unstructured(pruned, self.criterion, 0.0 if nm else amount, masks=masks,
                                 include_linear=include_linear, generator=generator, loader=loader,
                                 per_layer=self.algorithm == "layer", pattern=pattern,
                                 spare_classifier=spare_classifier, max_layer_sparsity=max_layer_sparsity)
        return pruned, new


class PrunerRegistry(Registry[Pruner]):
    """One pruner per criterion, then the registered pruners, then one per sparse-training method."""

    def _all(self) -> dict[str, Pruner]:
        out = {name: Pruner(name, name, "channels" if crit.structured else "global") for name, crit in CRITERIA.items()}
        out.update((n, self._items[n]) for n in Registry.names(self))
        out.update((n, Pruner(n, "magnitude", "sparse_training")) for n in SPARSE_TRAINING.names() if n not in out)
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
for _p in (Pruner("layer_magnitude", "magnitude", "layer"), Pruner("nm", "magnitude", "n_m"),
           Pruner("gmp", "magnitude", "gradual"), Pruner("sfp", "l2_filters", "soft_channels")):
    PRUNERS.register(_p.name, _p)


@torch.no_grad()
def soft_prune_channels_(model: nn.Module, criterion, ratios, *, example_input: Tensor | None = None, round_to: int = 1,
                         ignore=(CLASSIFIER,), loader=None, generator: torch.Generator | None = None) -> None:
    """Zero, in place, the output channels (weight rows and biases of every producing layer) that
    ``prune_channels`` with the same arguments would remove; the model keeps its shape (SFP's soft prune)."""
    graph = trace_channels(model, example_input, ignore=tuple(ignore))
    keep = select_channels(model, criterion, ratios, round_to=round_to, loader=loader, generator=generator, graph=graph)
    kept = {g.id: keep[g.name] for g in graph.groups if g.name in keep}
    for name, label in graph.producers:
        dropped, pos = [], 0
        for gid, start, n in label.segs:
            idx = kept.get(graph.uf.find(gid))
            if idx is not None:
                gone = torch.ones(n, dtype=torch.bool)
                gone[idx[(idx >= start) & (idx < start + n)] - start] = False
                dropped.append(torch.nonzero(gone).flatten() + pos)
            pos += n
        if dropped:
            module = model.get_submodule(name)
            rows = torch.cat(dropped).to(module.weight.device)
            module.weight[rows] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[rows] = 0

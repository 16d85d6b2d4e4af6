"""The structured pruner: score every channel group with a criterion, keep the best channels, shrink."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from nptm.pruning.criteria.base import CRITERIA, Criterion
from nptm.pruning.structured.graph import CLASSIFIER, ChannelGraph, ChannelGroup, trace_channels
from nptm.pruning.structured.shrink import shrink_graph

Ratios = float | Mapping[str, float] | Callable[[nn.Module], Mapping[str, float]]


def channel_groups(model: nn.Module, example_input: Tensor | None = None, *, ignore: Iterable[str] = ()) -> list[ChannelGroup]:
    """The channel groups of ``model`` found by tracing it on ``example_input`` (default: one 32x32 sample).
    Groups with a ``reason`` are kept whole (they reach the output, are ignored, or pass an op that is not
    channel-wise); the others are prunable."""
    return trace_channels(model, example_input, ignore=tuple(ignore)).groups


def kept_count(size: int, ratio: float, round_to: int = 1, blocks: int = 1) -> int:
    """int(C·(1−p)) rounded down to a multiple of ``round_to`` (and of ``blocks``), at least one step, at most C."""
    step = math.lcm(max(1, int(round_to)), blocks)
    k = int(size * (1 - ratio))
    return min(size, max(step, k - k % step))


def group_ratios(graph: ChannelGraph, ratios: Ratios, model: nn.Module) -> dict[str, float]:
    """Group name -> ratio from one float (every prunable group), layer name -> ratio, or a preset (callable)."""
    if callable(ratios) and not isinstance(ratios, Mapping):
        ratios = ratios(model)
    if isinstance(ratios, bool) or not isinstance(ratios, (int, float, Mapping)):
        raise TypeError(f"ratios must be a float, a mapping layer -> ratio or a preset, got {type(ratios).__name__}")
    if not isinstance(ratios, Mapping):
        out = {g.name: float(ratios) for g in graph.groups if g.prunable}
    else:
        owner = {p: g for g in graph.groups for p in g.producers}
        unknown = sorted(set(ratios) - set(owner))
        if unknown:
            raise ValueError(f"ratios name layers that produce no channel group: {unknown[:5]}")
        out = {}
        for layer, r in ratios.items():
            g = owner[layer]
            if r and not g.prunable:
                raise ValueError(f"cannot prune {layer}: its channels are kept whole ({g.reason})")
            if out.get(g.name, r) != r:
                raise ValueError(f"{layer} and other layers of group {g.name} are given different ratios")
            out[g.name] = float(r)
    bad = {n: r for n, r in out.items() if not 0 <= r < 1}
    if bad:
        raise ValueError(f"pruning ratios must be in [0, 1), got {dict(list(bad.items())[:3])}")
    return out


def group_scores(model: nn.Module, graph: ChannelGraph, criterion: Criterion, *, loader=None,
                 generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """Group id -> float64 score per channel: the criterion's per-output-channel scores summed over producers
    (grad mode is left as it is: data-aware criteria may need gradients)."""
    modules = dict(model.named_modules())
    params = {f"{name}.weight": modules[name].weight for name, _ in graph.producers}
    scores = criterion.scores(model, params, loader=loader, generator=generator)
    uf, out = graph.uf, {}
    for name, label in graph.producers:
        s, pos = scores[f"{name}.weight"].detach().to("cpu", torch.float64).reshape(-1), 0
        for gid, start, n in label.segs:
            root = uf.find(gid)
            acc = out.setdefault(root, torch.zeros(uf.sizes[root], dtype=torch.float64))
            acc[start : start + n] += s[pos : pos + n]
            pos += n
    return out


def top_channels(scores: Tensor, k: int, blocks: int = 1) -> Tensor:
    """Sorted indices of the k highest scores (ties: the lower index), k/blocks from each equal block."""
    per = scores.reshape(blocks, -1)
    order = torch.sort(per, dim=1, descending=True, stable=True).indices[:, : k // blocks]
    return (order + torch.arange(blocks)[:, None] * per.shape[1]).reshape(-1).sort().values


def select_channels(model: nn.Module, criterion: str | Criterion, ratios: Ratios, *, example_input: Tensor | None = None,
                    round_to: int = 1, ignore: Iterable[str] = (CLASSIFIER,), loader=None,
                    generator: torch.Generator | None = None, graph: ChannelGraph | None = None) -> dict[str, Tensor]:
    """Group name -> sorted kept channel indices for every group that loses channels."""
    crit = CRITERIA[criterion]() if isinstance(criterion, str) else criterion
    if not getattr(crit, "structured", False):
        raise ValueError(f"criterion {getattr(crit, 'name', '') or type(crit).__name__} scores weights, not channels")
    graph = graph or trace_channels(model, example_input, ignore=tuple(ignore))
    per_group = group_ratios(graph, ratios, model)
    scores = group_scores(model, graph, crit, loader=loader, generator=generator)
    keep = {}
    for g in graph.groups:
        r = per_group.get(g.name, 0.0)
        k = kept_count(g.size, r, round_to, g.blocks)
        if r > 0 and k < g.size:
            keep[g.name] = top_channels(scores[g.id], k, g.blocks)
    return keep


def prune_channels(model: nn.Module, criterion: str | Criterion, ratios: Ratios, *, example_input: Tensor | None = None,
                   round_to: int = 1, ignore: Iterable[str] = (CLASSIFIER,), loader=None,
                   generator: torch.Generator | None = None) -> nn.Module:
    """A NEW, physically smaller model: every prunable group keeps its ``kept_count`` best channels.

    ``criterion``: a name in ``CRITERIA`` (``l1_filters``, ``random_filters``, ...) or a structured
    ``Criterion``. ``ratios``: one float for every prunable group, layer name -> ratio (the group of
    that producing layer), or a preset (a callable model -> mapping). ``ignore``: layer-name patterns
    (fnmatch or a module prefix) whose groups stay whole; the output layer always does.
    """
    graph = trace_channels(model, example_input, ignore=tuple(ignore))
    keep = select_channels(model, criterion, ratios, round_to=round_to, loader=loader, generator=generator, graph=graph)
    return shrink_graph(model, graph, keep)


def shrink(model: nn.Module, keep: Mapping[str, Tensor], *, example_input: Tensor | None = None) -> nn.Module:
    """A NEW model keeping, for each group named in ``keep`` (``ChannelGroup.name``: its first producing
    layer), only the listed channel indices; every tensor is sliced in one ``nptm.ops.gather_channels`` call."""
    return shrink_graph(model, trace_channels(model, example_input), keep)

"""What a study measures of a model: sparsity (global and per layer), parameters and FLOPs against the dense
model (``DenseBaseline``), and one pruning step with ALLR's norm drop d1."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from nptm.models import build_model, count_flops, count_params
from nptm.pruning import Masks, Pruner, prunable_weights
from nptm.pruning.unstructured import LayerCollapse
from nptm.schedules import norm_drop
from nptm.utils.errors import ConfigError


@dataclass(frozen=True)
class DenseBaseline:
    """What pruned models are measured against: the dense model's prunable sizes and FLOPs at the input shape."""

    prunable_numel: dict[str, int]
    flops: int
    input_shape: tuple[int, int, int]
    include_linear: bool
    spare_classifier: bool = False

    @classmethod
    def of(cls, model_name: str, num_classes: int, in_channels: int, image_size: int,
           include_linear: bool, spare_classifier: bool = False) -> "DenseBaseline":
        model = build_model(model_name, num_classes, in_channels)
        shape = (in_channels, image_size, image_size)
        numel = {n: w.numel() for n, w in prunable_weights(model, include_linear,
                                                           spare_classifier=spare_classifier).items()}
        return cls(numel, count_flops(model, shape), shape, include_linear, spare_classifier)


def measure(model: nn.Module, masks: Masks | None, base: DenseBaseline) -> dict[str, Any]:
    """Sparsity (global and per layer, relative to the dense model), params and FLOPs of ``model``, and the
    ``empty_layers``: those at density 0 (a layer that passes nothing on)."""
    total, nonzero = count_params(model)
    flops = count_flops(model, base.input_shape)
    effective = count_flops(model, base.input_shape, effective=True)
    if masks is not None:
        sparsity, per_layer = masks.sparsity(), masks.per_layer_sparsity()
    else:  # dense or physically smaller (filter-pruned): count what is left against the dense sizes
        weights = prunable_weights(model, base.include_linear, spare_classifier=base.spare_classifier)
        left = {n: int(weights[n].count_nonzero()) if n in weights else 0 for n in base.prunable_numel}
        per_layer = {n: 1.0 - left[n] / numel for n, numel in base.prunable_numel.items()}
        sparsity = 1.0 - sum(left.values()) / sum(base.prunable_numel.values())
    return {"sparsity": sparsity, "per_layer_sparsity": per_layer, "params_total": total, "params_nonzero": nonzero,
            "flops_dense": flops, "flops_effective": effective, "speedup": base.flops / max(effective, 1),
            "empty_layers": [n for n, s in per_layer.items() if s >= 1.0]}


LATENCY_REPEATS = 10


def inference_latency(model: nn.Module, masks: Masks | None, base: DenseBaseline, batches: Sequence[int],
                      dense: nn.Module | None = None) -> dict[str, Any]:
    """CPU inference latency of ``model`` as a user would run it (``nptm.sparse.deploy``: sparsified where that is
    faster at every batch size measured, else as it is, dense or shrunk by filter pruning) and of the ``dense``
    architecture, timed interleaved in this process at each batch size: median and min-max ms over the rounds, their
    ratio (the measured speedup) with the min-max of the round-by-round ratios, and the per-layer choices."""
    from nptm.sparse import deploy, measure_latency
    from nptm.sparse.freezing import frozen_or_eager

    model = copy.deepcopy(model).cpu().eval()
    masks = {n: m.cpu() for n, m in masks.items()} if masks is not None else None
    chosen = deploy(model, masks, torch.zeros(1, *base.input_shape), batch_sizes=batches)
    modules = {"pruned": chosen.module} if dense is None else {"pruned": chosen.module, "dense": dense.cpu().eval()}
    out: dict[str, Any] = {"inference_engine": "nptm.sparse" if chosen.sparse else "torch",
                           "latency_threads": torch.get_num_threads(), "deployed_note": chosen.note,
                           "sparse_choices": {c.name: c.sparse for c in chosen.choices}, "latency_graph": "frozen"}
    for b in batches:
        x = torch.randn(b, *base.input_shape)
        engines = {}
        for k, m in modules.items():
            engines[k], graph = frozen_or_eager(m, x)
            if graph != "frozen":
                out["latency_graph"] = graph
        times = measure_latency(engines, x, repeats=LATENCY_REPEATS)
        for key, t in times.items():
            where = "" if key == "pruned" else "dense_"
            out.update({f"latency_{where}b{b}_ms": t.median_ms, f"latency_{where}b{b}_min_ms": t.min_ms,
                        f"latency_{where}b{b}_max_ms": t.max_ms})
        if dense is not None:
            rounds = [d / p for d, p in zip(times["dense"].samples_ms, times["pruned"].samples_ms)]
            out.update({f"measured_speedup_b{b}": times["dense"].median_ms / times["pruned"].median_ms,
                        f"measured_speedup_b{b}_min": min(rounds), f"measured_speedup_b{b}_max": max(rounds)})
    return out


def example_input(model: nn.Module, input_shape: Sequence[int] | None) -> torch.Tensor | None:
    """A zero batch of one at ``input_shape`` on the model's device and dtype (what channel pruning traces)."""
    p = next(model.parameters())
    return torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype) if input_shape else None


@torch.no_grad()
def prune_step(model: nn.Module, masks: Masks | None, pruner: Pruner, amount, *, include_linear: bool,
               generator: torch.Generator, round_to: int = 1, ignore: Sequence[str] = ("<classifier>",),
               input_shape: Sequence[int] | None = None, loader=None, pattern: str | None = None,
               spare_classifier: bool = False, max_layer_sparsity: float | None = None
               ) -> tuple[nn.Module, Masks | None, float]:
    """(pruned copy of ``model``, its masks or None, ALLR's d1 for this step). ``amount``: the fraction of the
    remaining weights (filter pruners: the ratio of every channel group, or layer -> ratio, traced at
    ``input_shape`` with ``round_to`` and ``ignore``). ``loader``: calibration batches for data-aware criteria.
    ``pattern``: what a masking pruner removes together ("4x1" blocks, ``nptm.pruning.patterns``).
    ``spare_classifier``, ``max_layer_sparsity``: ``prune_unstructured``'s (masks only)."""
    chosen = dict(include_linear=include_linear, spare_classifier=spare_classifier)
    before = [w.detach().clone() for w in prunable_weights(model, **chosen).values()]
    if pruner.structured:
        pruned, new_masks = pruner.prune(model, amount, generator=generator, loader=loader, round_to=round_to,
                                         ignore=tuple(ignore), example_input=example_input(model, input_shape))
    else:
        try:
            pruned, new_masks = pruner.prune(model, amount, masks=masks, include_linear=include_linear,
                                             generator=generator, loader=loader, pattern=pattern,
                                             spare_classifier=spare_classifier,
                                             max_layer_sparsity=max_layer_sparsity)
        except LayerCollapse as e:
            raise ConfigError(f"--pruner {pruner.name}: pruning would empty {', '.join(e.layers)}" + (
                f" past --max-layer-sparsity {max_layer_sparsity:g}: prune less" if max_layer_sparsity is not None
                else "; give --max-layer-sparsity (e.g. 0.99: every layer keeps 1% of its weights)"
                + (", --spare-classifier" if include_linear and not spare_classifier else "")
                + ", or --max-layer-sparsity 1 to allow empty layers")) from None
    after = list(prunable_weights(pruned, **chosen).values())
    if pruner.structured:
        fraction = 1.0 - sum(w.numel() for w in after) / sum(w.numel() for w in before)
    elif isinstance(amount, float):
        fraction = amount
    else:  # a pattern: the share of the alive weights it pruned
        alive = sum(int(m.sum()) for m in masks.values()) if masks is not None else sum(w.numel() for w in before)
        fraction = 1.0 - sum(int(m.sum()) for m in new_masks.values()) / max(alive, 1)
    return pruned, new_masks, norm_drop(before, after, fraction)

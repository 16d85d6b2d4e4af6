"""``sparsify``: a pruned model rewritten for CPU inference. Traced with torch.fx (BatchNorm folded, each
conv/linear sparse where measured faster, residual adds and ReLUs fused into the sparse layers); a model
torch.fx cannot trace keeps its Python code and gets only the per-layer replacement."""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from nptm.pruning.masks import Masks, unwrap
from nptm.sparse.choose import LayerChoice, choose_layers
from nptm.sparse.graph import fold_batchnorm, fuse_epilogues, set_module
from nptm.sparse.pooling import channels_last_pooling

DEFAULT_BATCH_SIZES = (1, 16)


def as_inputs(example_input: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    inputs = (example_input,) if isinstance(example_input, Tensor) else tuple(example_input)
    if not inputs or not all(isinstance(t, Tensor) and t.dim() > 0 for t in inputs):
        raise ValueError("example_input must be a batched tensor (or a tuple of them)")
    return inputs


def resize_batch(inputs: tuple[Tensor, ...], b: int) -> tuple[Tensor, ...]:
    """The inputs with batch size ``b`` (rows repeated or cut), in the same memory format."""
    out = []
    for t in inputs:
        reps = math.ceil(b / t.shape[0])
        r = t.repeat((reps,) + (1,) * (t.dim() - 1))[:b]
        cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        out.append(r.contiguous(memory_format=torch.channels_last) if cl else r.contiguous())
    return tuple(out)


def _check_model(model: nn.Module) -> None:
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.device.type != "cpu":
            raise ValueError(f"sparsify: {name} is on {p.device}; the sparse engine runs on CPU (model.cpu())")


def _trace(model: nn.Module, inputs: tuple[Tensor, ...]) -> fx.GraphModule | None:
    try:
        gm = fx.symbolic_trace(model)
        ShapeProp(gm).propagate(*inputs)
    except Exception:  # data-dependent control flow, unsupported ops, ...: the per-layer path
        return None
    return gm


def sparsify(
    model: nn.Module,
    example_input: Tensor | Sequence[Tensor],
    masks: Masks | Mapping[str, Tensor] | None = None,
    *,
    batch_sizes: Sequence[int] | None = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    rounds: int = 7,
    measure: bool = True,
) -> nn.Module:
    """A copy of ``model`` (eval mode) computing the same function faster on CPU from its zero weights.

    ``masks`` (parameter name -> bool mask, e.g. ``nptm.pruning.Masks``) are applied to the copy first;
    without them the zeros already in the weights count. Each float32 conv/linear runs sparse where its
    sparse time beats its dense time on its own input at the example's batch size and at every size of
    ``batch_sizes`` (inputs made by repeating the example), with ``threads`` torch threads (default: the
    current number); the others stay dense. A weight whose nonzeros come in blocks of output channels runs
    the register-blocked kernel; max-pooling runs through channels_last where that is measured faster. ``measure=False`` makes every layer the sparse op can run
    sparse, untimed. ``module.sparse_layers`` lists the choices (``LayerChoice``).
    Run the result under ``torch.inference_mode()`` or ``torch.no_grad()``.
    """
    inputs = as_inputs(example_input)
    root = copy.deepcopy(unwrap(model)).eval()
    _check_model(root)
    if masks is not None:
        Masks(dict(masks)).bind(root).apply(root)
    sizes = sorted({inputs[0].shape[0], *(batch_sizes or ())})
    old_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        with torch.no_grad():
            gm = _trace(root, inputs)
            if gm is not None:
                fold_batchnorm(gm)
                gm.recompile()
            target = gm if gm is not None else root
            batches = {b: resize_batch(inputs, b) for b in sizes}
            choices, chosen = choose_layers(target, batches, rounds, measure)
            pools = channels_last_pooling(target, batches, rounds) if measure else {}
    finally:
        torch.set_num_threads(old_threads)
    for name, module in {**chosen, **pools}.items():
        set_module(target, name, module)
    if gm is not None:
        fuse_epilogues(gm)
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    target.sparse_layers = choices
    return target


def summary(choices: Sequence[LayerChoice]) -> str:
    """One line per layer: name, density, the dense and sparse ms per batch size, the choice."""
    lines = []
    for c in choices:
        times = " ".join(f"b{b}: {c.dense_ms[b]:.3f}/{c.sparse_ms[b]:.3f} ms" for b in c.dense_ms)
        lines.append(f"{c.name:40s} {c.kind:6s} density {c.density:.3f} {'sparse' if c.sparse else 'dense ':6s} {times} {c.reason}")
    return "\n".join(lines)

"""``sparsify``: a pruned model rewritten for CPU inference. Traced with torch.fx (BatchNorm folded, each
conv/linear sparse where measured faster, residual adds and ReLUs fused into the sparse layers, each rewrite
under the conditions ``graph`` states); a model torch.fx cannot trace faithfully (``tracing.trace``) keeps its
Python code and gets only the per-layer replacement, except for layers whose weights it reads elsewhere."""
from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from nptm.pruning.masks import Masks, unwrap
from nptm.sparse.choose import CANNOT, MARGIN, LayerChoice, choose_layers, replay_choices
from nptm.sparse.graph import fold_batchnorm, fuse_epilogues, keep_attribute_reads, set_module
from nptm.sparse.pooling import channels_last_pooling
from nptm.sparse.tracing import read_outside, trace
from nptm.utils.threads import torch_threads

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


def _check_runs(model: nn.Module, inputs: tuple[Tensor, ...]) -> None:
    """One line naming the example when the model does not run on it (wrong shape, dtype, ...)."""
    try:
        model(*inputs)
    except Exception as e:  # noqa: BLE001 - any failure of the user's model on the user's example
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in inputs)
        raise ValueError(f"sparsify: {type(model).__name__} does not run on the example input ({shapes}): "
                         f"{first}") from None


def _warn_if_nothing_can_run_sparse(model: nn.Module, choices: list[LayerChoice]) -> None:
    if not choices:
        warnings.warn(f"sparsify: {type(model).__name__} has no Conv2d or Linear layer: nothing to sparsify",
                      stacklevel=3)
    elif all(c.reason.startswith(CANNOT) for c in choices):
        warnings.warn(f"sparsify: no layer of {type(model).__name__} can run sparse ({choices[0].name}: "
                      f"{choices[0].reason})", stacklevel=3)

def sparsify(
    model: nn.Module,
    example_input: Tensor | Sequence[Tensor],
    masks: Masks | Mapping[str, Tensor] | None = None,
    *,
    batch_sizes: Sequence[int] | None = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    rounds: int = 7,
    measure: bool = True,
    choices: Sequence[LayerChoice] | Mapping[str, bool] | None = None,
    timing: str = "cpu",
    cache: bool = True,
) -> nn.Module:
    """A copy of ``model`` (eval mode) computing the same function faster on CPU from its zero weights.

    ``masks`` (parameter name -> bool mask, e.g. ``nptm.pruning.Masks``) are applied to the copy first;
    without them the zeros already in the weights count. Each float32 conv/linear runs sparse where its
    sparse form is clearly faster (best of ``rounds`` interleaved samples, at least ``MARGIN`` = 1.15x) on
    its own input at the example's batch size and at every size of ``batch_sizes`` (inputs made by repeating
    the example); the others stay dense. ``timing`` "cpu" (default) times CPU time on one thread, so that a
    busy machine does not change the choice; "wall" times wall-clock time with ``threads`` torch threads
    (default: the current number). Layers of the same geometry and nearly the same density decide together
    (``nptm.sparse.choose``). ``cache``: a layer timed before on this machine (same geometry, input and
    density) reuses those timings (``nptm.sparse.timings``), so that it makes the same choice; False measures
    afresh and keeps nothing.
    ``measure=False`` makes every layer the sparse op can run sparse, untimed. ``choices`` replays a saved
    decision (a ``sparse_layers`` list, or layer name -> sparse), untimed: a layer it does not name stays
    dense, a name the model lacks is refused. A weight whose nonzeros come in blocks of output channels runs
    the register-blocked kernel. A conv that stays dense runs as ``DenseConv2d`` (oneDNN called directly, or nptm's
    depthwise kernel for a depthwise conv, the epilogue fused) where that is measured faster than torch's layer (``LayerChoice.dense_engine``; untimed:
    ``choose.default_engine``). Max-pooling runs through channels_last where that is measured faster (not when
    replaying). ``module.sparse_layers`` lists the choices (``LayerChoice``).
    Run the result under ``torch.inference_mode()`` or ``torch.no_grad()``.
    """
    inputs = as_inputs(example_input)
    root = copy.deepcopy(unwrap(model)).eval()
    _check_model(root)
    if masks is not None:
        Masks(dict(masks)).bind(root).apply(root)
    replay = replay_choices(root, choices) if choices is not None else None
    with torch.no_grad():
        _check_runs(root, inputs)
    sizes = sorted({inputs[0].shape[0], *(batch_sizes or ())})
    with torch_threads(threads), torch.no_grad():
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints a traceback before raising
            gm = trace(root, inputs, resize_batch(inputs, inputs[0].shape[0] + 1))
        if gm is not None:
            keep_attribute_reads(gm)
            fold_batchnorm(gm)
            gm.recompile()
        target = gm if gm is not None else root
        batches = {b: resize_batch(inputs, b) for b in sizes}
        made, chosen = choose_layers(target, batches, rounds, measure, replay, timing, cache)
        if gm is None:  # the per-layer path: a layer whose weights the model reads elsewhere stays dense
            outside = read_outside(root, inputs, list(chosen)) if chosen else set()
            for c in made:
                if c.name in outside:
                    if c.sparse:
                        c.sparse, c.reason = False, "its parameters are read outside its forward"
                    c.dense_engine = "torch"
                    del chosen[c.name]
        pools = channels_last_pooling(target, batches, rounds) if measure and replay is None else {}
    for name, module in {**chosen, **pools}.items():
        set_module(target, name, module)
    if gm is not None:
        fuse_epilogues(gm)
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    target.sparse_layers = made
    _warn_if_nothing_can_run_sparse(model, made)
    return target


def summary(choices: Sequence[LayerChoice] | nn.Module) -> str:
    """A header, then one line per layer: name, kind, density, the choice, the dense/sparse ms per batch size
    (pooled over the layers that decided together) and why. Takes ``sparse_layers`` or the sparsified module."""
    choices = getattr(choices, "sparse_layers", choices)
    if isinstance(choices, nn.Module):
        raise ValueError(f"summary: {type(choices).__name__} has no sparse_layers (give it what sparsify returned)")
    choices = list(choices)
    if not choices:
        return "no Conv2d or Linear layer: nothing to sparsify"
    width = max(24, *(len(c.name) for c in choices))
    lines = [f"{sum(c.sparse for c in choices)} of {len(choices)} conv/linear layers sparse (sparse where >= {MARGIN}x "
             "faster than dense at every batch size timed; the others run onednn, DenseConv2d: oneDNN called directly, "
             "nptm's kernel for depthwise convs; or dense, the torch layer)",
             f"{'layer':{width}s} {'kind':6s} {'density':>7s} {'run':6s} {'dense/sparse ms per batch':30s} why"]
    for c in choices:
        times = " ".join(f"b{b}: {c.dense_ms[b]:.3f}/{c.sparse_ms[b]:.3f}" for b in c.dense_ms) or "-"
        why = c.reason + (f" (decided with {c.group})" if c.group and c.group != c.name else "")
        run = "sparse" if c.sparse else "onednn" if c.dense_engine == "onednn" else "dense"
        lines.append(f"{c.name:{width}s} {c.kind:6s} {c.density:7.3f} {run:6s} {times:30s} {why}")
    return "\n".join(lines)

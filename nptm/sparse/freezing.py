"""The sparsified model's graph run outside Python: ``freeze`` traces a module (``sparsify``'s, ``load_sparse``'s or
any other) with ``torch.jit.trace`` and folds its weights with ``torch.jit.freeze``, so that a forward is one call
into TorchScript's interpreter instead of a Python call per module and per operation (about 1 ms of MobileNetV2's
forward; docs/sparse-inference.md). The nptm kernels are operators (``torch.ops.nptm``), so the trace records them
as they are; ``DenseConv2d`` records oneDNN's plain convolution (``torch.mkldnn_convolution``), the epilogue after it.

A trace is a snapshot: it runs what the module did on the example (branches on shapes, layouts or values are
fixed) and the weights as they were. ``freeze`` checks that the frozen graph gives the module's outputs on the
example and on another batch size, and refuses otherwise."""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from nptm.sparse.sparsify import as_inputs, resize_batch
from nptm.sparse.tracing import same_outputs

TOLERANCE = 1e-5  # of the largest output magnitude: oneDNN's conv then an add vs its fused add


def freeze(module: nn.Module, example_input: Tensor | Sequence[Tensor]) -> torch.jit.ScriptModule:
    """``module`` (eval mode) traced on ``example_input`` and frozen, its outputs checked against the module's on
    the example and on the example's batch size + 1; run it under ``torch.inference_mode()`` on inputs of the
    example's dtype, device and memory format. A module the trace cannot follow raises ValueError (run it as
    it is). Its first two calls are slower (TorchScript optimizes the graph over them); ``freeze`` makes them."""
    if module.training:
        raise ValueError("freeze: the module is in training mode (call .eval() first)")
    inputs = as_inputs(example_input)
    other = resize_batch(inputs, inputs[0].shape[0] + 1)
    name = type(module).__name__
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch deprecates TorchScript, still shipped
        try:
            frozen = torch.jit.freeze(torch.jit.trace(module, inputs, check_trace=False))
        except Exception as e:  # an op or a value the tracer cannot record
            raise ValueError(f"freeze: cannot trace {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        for x in (inputs, other, inputs):  # the last two calls are the warm-up
            try:
                got = frozen(*[t.clone() for t in x])
            except Exception:  # e.g. a shape the trace fixed
                got = None
            if got is None or not same_outputs(got, module(*[t.clone() for t in x]), TOLERANCE):
                raise ValueError(f"freeze: the traced graph of {name} computes something else at batch {x[0].shape[0]} "
                                 "(control flow on shapes or values?); run the module as it is")
    return frozen


def frozen_or_eager(module: nn.Module, example_input: Tensor | Sequence[Tensor]) -> tuple[nn.Module, str]:
    """(``freeze(module, example_input)``, "frozen"), or (``module``, "eager: <why>") where the trace cannot follow it:
    a model as a user would time and run it."""
    try:
        return freeze(module, example_input), "frozen"
    except ValueError as e:
        return module, f"eager: {e}"

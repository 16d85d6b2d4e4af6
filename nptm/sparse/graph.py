"""Rewrites of the traced graph (``tracing.trace``), each exact: the rewritten graph computes what the traced one
computes (up to the rounding of the sparse kernel's sums) under the conditions it checks.

- ``keep_attribute_reads``: a ``get_attr`` of a tensor of a conv, linear or BatchNorm (modules the rewrites below
  and the sparse replacement change or remove), found by identity so that tied weights count, reads the tensor
  from a new root attribute instead: ``F.linear(h, self.fc.weight.t())`` keeps the dense weight after ``fc``
  turns sparse or folds a BatchNorm. Always exact.
- ``fold_batchnorm``: ``bn(layer(x))`` becomes ``layer'(x)``, where ``bn`` is an eval-mode ``BatchNorm2d``
  (after an ``nn.Conv2d``) or ``BatchNorm1d`` (after an ``nn.Linear`` with a 2-D output) with running
  statistics, called with the layer's output alone; the layer (exact type) is called once and ``bn`` is its
  output's only user; no node between the two writes to anything (the statistics are now read at the layer's
  place). The layer's own parameters may be tied elsewhere: the fold writes a copy.
- ``fuse_epilogues``: ``clamp(conv(x) + r)`` (either part may be absent; a residual only for convs) becomes one
  call of the sparse layer or ``DenseConv2d`` placed where the last fused op was, when: the layer is called once,
  with ``x`` alone;
  each fused op is the only user of the one before; the add is ``+``, ``torch.add`` or ``Tensor.add`` without
  ``alpha``/``out``, or in place on the conv's output (``y += r``, ``y.add_(r)``: not ``r += y``, which writes
  ``r``); ``r`` is float32 with exactly the conv output's shape at two batch sizes (the example's and one
  more, so a broadcast ``(1, C, H, W)`` never qualifies; at a batch size where the shapes differ the kernel
  raises, it never computes something else); the clamp is a ReLU, ReLU6, Hardtanh or clamp with numeric
  bounds, in place or not; and no node between the conv and the last fused op writes to anything (the conv
  now reads ``x`` and its weights there).
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from nptm.sparse.dense import DenseConv2d
from nptm.sparse.modules import SparseConv2d, SparseLinear
from nptm.sparse.tracing import writes_between

_REWRITTEN = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def set_module(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def module_calls(graph: fx.Graph) -> dict[str, int]:
    """How many call_module nodes call each module (a module called twice shares its weights)."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _attribute(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def keep_attribute_reads(gm: fx.GraphModule) -> int:
    """Point each ``get_attr`` of a conv/linear/BatchNorm tensor at a root attribute holding it; returns how many."""
    owned = {id(t) for m in gm.modules() if isinstance(m, _REWRITTEN) for t in [*m.parameters(False), *m.buffers(False)]}
    moved = 0
    for node in gm.graph.nodes:
        t = _attribute(gm, node.target) if node.op == "get_attr" else None
        if not isinstance(t, Tensor) or id(t) not in owned:
            continue
        name, i = "kept_" + node.target.replace(".", "_"), 1
        while hasattr(gm, name):
            name, i = f"kept_{node.target.replace('.', '_')}_{i}", i + 1
        if isinstance(t, nn.Parameter):
            gm.register_parameter(name, t)
        else:
            gm.register_buffer(name, t)
        node.target = name
        moved += 1
    return moved


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold each BatchNorm into the conv/linear before it where exact (module docstring); returns how many."""
    modules, calls, folded = dict(gm.named_modules()), module_calls(gm.graph), 0
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if type(bn) not in (nn.BatchNorm1d, nn.BatchNorm2d) or bn.training or not bn.track_running_stats or bn.running_mean is None:
            continue
        prev = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1 or calls[prev.target] != 1:
            continue
        layer = modules[prev.target]
        if writes_between(prev, node, modules):
            continue
        if type(layer) is nn.Conv2d and type(bn) is nn.BatchNorm2d:
            fused = fuse_conv_bn_eval(layer.eval(), bn)
        elif type(layer) is nn.Linear and type(bn) is nn.BatchNorm1d and len(prev.meta.get("batch_shapes", ((),))[0]) == 2:
            fused = fuse_linear_bn_eval(layer.eval(), bn)
        else:
            continue
        set_module(gm, prev.target, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    return folded


_RELUS = {F.relu, torch.relu, torch.relu_, F.relu_}
_ADDS = {operator.add, torch.add}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def clamp_bounds(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[float | None, float | None] | None:
    """(min, max) when ``node`` clamps its first argument (ReLU, ReLU6, Hardtanh, clamp); else None."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if len(node.args) != 1 or node.kwargs:
            return None
        if type(m) is nn.ReLU:
            return (0.0, None)
        if type(m) in (nn.ReLU6, nn.Hardtanh):
            return (float(m.min_val), float(m.max_val))
        return None
    if node.op == "call_function" and node.target in _RELUS and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}:
        return (0.0, None)
    if node.op == "call_function" and node.target is F.relu6 and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}:
        return (0.0, 6.0)
    if node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1 and not node.kwargs:
        return (0.0, None)
    is_clamp = (node.op == "call_method" and node.target in ("clamp", "clamp_")) or (node.op == "call_function" and node.target is torch.clamp)
    rest = list(node.args[1:]) + [node.kwargs.get(k) for k in ("min", "max") if k in node.kwargs]
    if is_clamp and 1 <= len(rest) <= 2 and all(v is None or _number(v) for v in rest) and set(node.kwargs) <= {"min", "max"}:
        lo = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
        hi = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
        if lo is None and hi is None:
            return None
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    return None


def residual_of(add: fx.Node, node: fx.Node) -> fx.Node | None:
    """``r`` when ``add`` is ``node + r`` out of place or ``node += r`` in place, with ``r`` of the shape of
    ``node`` at both traced batch sizes and float32; else None."""
    in_place = add.op == "call_method" and add.target == "add_"
    is_add = (add.op == "call_function" and add.target in _ADDS) or (add.op == "call_method" and add.target == "add") or in_place
    if not is_add or add.kwargs or len(add.args) != 2 or add.args[0] is add.args[1] or node not in add.args:
        return None
    if in_place and add.args[0] is not node:
        return None  # r.add_(conv(x)) writes r
    other = add.args[1] if add.args[0] is node else add.args[0]
    if not isinstance(other, fx.Node):
        return None
    shapes, meta = node.meta.get("batch_shapes"), other.meta.get("tensor_meta")
    if shapes is None or shapes != other.meta.get("batch_shapes") or getattr(meta, "dtype", None) != torch.float32:
        return None
    return other


def _sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def fuse_epilogues(gm: fx.GraphModule) -> int:
    """Fuse each sparse layer's or DenseConv2d's residual add and clamp into it where exact (module docstring);
    returns the fused ops."""
    modules, calls, fused = dict(gm.named_modules()), module_calls(gm.graph), 0
    for node in list(gm.graph.nodes):
        layer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(layer, (SparseConv2d, SparseLinear, DenseConv2d)) or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs:
            continue
        chain, residual, bounds = [node], None, None
        user = _sole_user(node)
        if user is not None and isinstance(layer, (SparseConv2d, DenseConv2d)):
            residual = residual_of(user, node)
            if residual is not None and not writes_between(node, user, modules):
                chain.append(user)
            else:
                residual = None
        user = _sole_user(chain[-1])
        if user is not None:
            bounds = clamp_bounds(user, modules)
            if bounds is not None and not writes_between(node, user, modules, skip=chain):
                chain.append(user)
            else:
                bounds = None
        if len(chain) == 1:
            continue
        layer.clamp_min, layer.clamp_max = bounds or (None, None)
        with gm.graph.inserting_before(chain[-1]):
            new = gm.graph.call_module(node.target, (node.args[0],) if residual is None else (node.args[0], residual))
        new.meta = dict(chain[-1].meta)
        chain[-1].replace_all_uses_with(new)
        for old in reversed(chain):
            gm.graph.erase_node(old)
        fused += len(chain) - 1
    return fused

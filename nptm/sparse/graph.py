"""The traced model's graph: BatchNorm folded into the conv/linear before it, and the sparse layers' epilogues
fused (a residual add, then a ReLU / ReLU6 / Hardtanh / clamp, each only when it is the layer's sole user)."""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from nptm.sparse.modules import SparseConv2d, SparseLinear


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


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold each eval-mode BatchNorm that is the only user of a conv/linear called once; returns how many."""
    modules, calls, folded = dict(gm.named_modules()), module_calls(gm.graph), 0
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats or bn.running_mean is None:
            continue
        prev = node.args[0] if node.args else None
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1 or calls[prev.target] != 1:
            continue
        layer = modules[prev.target]
        if type(layer) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif type(layer) is nn.Linear and isinstance(bn, nn.BatchNorm1d) and prev.meta.get("tensor_meta") is not None \
                and len(prev.meta["tensor_meta"].shape) == 2:
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        set_module(gm, prev.target, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    return folded


_RELUS = {F.relu, torch.relu, torch.relu_, F.relu_}
_ADDS = {operator.add, operator.iadd, torch.add}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def clamp_bounds(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[float | None, float | None] | None:
    """(min, max) when ``node`` clamps its first argument (ReLU, ReLU6, Hardtanh, clamp); else None."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) is nn.ReLU:
            return (0.0, None)
        if type(m) in (nn.ReLU6, nn.Hardtanh):
            return (float(m.min_val), float(m.max_val))
        return None
    rest = list(node.args[1:]) + [node.kwargs.get(k) for k in ("min", "max") if k in node.kwargs]
    if node.op == "call_function" and node.target in _RELUS and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}:
        return (0.0, None)
    if node.op == "call_function" and node.target is F.relu6 and len(node.args) == 1:
        return (0.0, 6.0)
    if node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1 and not node.kwargs:
        return (0.0, None)
    is_clamp = (node.op == "call_method" and node.target in ("clamp", "clamp_")) or (node.op == "call_function" and node.target is torch.clamp)
    if is_clamp and 1 <= len(rest) <= 2 and all(v is None or _number(v) for v in rest) and set(node.kwargs) <= {"min", "max"}:
        lo = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
        hi = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    return None


def residual_of(add: fx.Node, node: fx.Node) -> fx.Node | None:
    """The other operand when ``add`` is ``node + other`` of one shape and dtype; else None."""
    is_add = (add.op == "call_function" and add.target in _ADDS) or (add.op == "call_method" and add.target in ("add", "add_"))
    if not is_add or add.kwargs or len(add.args) != 2 or add.args[0] is add.args[1]:
        return None
    other = add.args[1] if add.args[0] is node else add.args[0]
    if not isinstance(other, fx.Node) or node not in add.args:
        return None
    a, b = node.meta.get("tensor_meta"), other.meta.get("tensor_meta")
    if a is None or b is None or not hasattr(b, "shape") or tuple(a.shape) != tuple(b.shape) or b.dtype != torch.float32:
        return None
    return other


def fuse_epilogues(gm: fx.GraphModule) -> int:
    """Fuse each sparse layer's sole-user residual add and clamp into it; returns the fused ops."""
    modules, calls, fused = dict(gm.named_modules()), module_calls(gm.graph), 0
    for node in list(gm.graph.nodes):
        layer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(layer, (SparseConv2d, SparseLinear)) or calls[node.target] != 1 or len(node.args) != 1:
            continue
        chain, residual, bounds = [node], None, None
        if len(node.users) == 1 and isinstance(layer, SparseConv2d):
            residual = residual_of(next(iter(node.users)), node)
            if residual is not None:
                chain.append(next(iter(node.users)))
        if len(chain[-1].users) == 1:
            bounds = clamp_bounds(next(iter(chain[-1].users)), modules)
            if bounds is not None:
                chain.append(next(iter(chain[-1].users)))
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

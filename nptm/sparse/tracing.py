"""A torch.fx trace that computes what the model computes, or None, and what each node of it writes to.

torch.fx records ``a += b`` as ``a + b``: for a tensor ``a`` Python runs ``a.add_(b)``, which also changes every
alias of ``a`` (``a = x`` before, a view, an ``nn.Identity`` output), so the plain trace can compute something
else than the model. ``trace`` records augmented assignments and writes those whose left operand is a tensor in
place (``add_``, ``sub_``, ``mul_``, ``div_``; another augmented op on a tensor: no trace). The trace is kept only
when it runs at two batch sizes and reproduces the model's output on the example bit for bit; its nodes then
carry ``tensor_meta`` (the example's) and ``batch_shapes`` (the tensor's shape at each batch size).
"""
from __future__ import annotations

import builtins
import inspect
import operator

import torch
from torch import Tensor, fx, nn
from torch.fx.graph import inplace_methods
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_IN_PLACE = {"add": "add_", "sub": "sub_", "mul": "mul_", "truediv": "div_"}
_AUGMENTED = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift")
_WRITING_OPERATORS = {getattr(operator, k) for k in inplace_methods} | {operator.setitem, operator.delitem}


class _Augmented:
    """``a op= b`` on a proxy: the out-of-place op, marked ``meta["augmented"]``."""

    def __getattr__(self, k: str):
        return _Attribute(self, k)


def _augmented(op: str):
    def impl(self, other):
        proxy = self.tracer.create_proxy("call_function", getattr(operator, op if op not in ("and", "or") else f"{op}_"),
                                         (self, other), {})
        proxy.node.meta["augmented"] = op
        return proxy
    return impl


for _op in _AUGMENTED:
    setattr(_Augmented, f"__i{_op}__", _augmented(_op))


class _Proxy(_Augmented, fx.Proxy):
    pass


class _Attribute(_Augmented, fx.proxy.Attribute):
    pass


class _Tracer(fx.Tracer):
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)


def _clone(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(t.clone() for t in inputs)  # the model may write to its inputs


def same_outputs(a, b, tolerance: float = 0.0) -> bool:
    """Whether two outputs (nested tensors and values) agree: NaN where NaN, bit for bit, or with ``tolerance``
    within that fraction of the largest magnitude of ``b`` (at least 1) for floating-point tensors."""
    (fa, sa), (fb, sb) = tree_flatten(a), tree_flatten(b)
    if sa != sb or len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if isinstance(x, Tensor) != isinstance(y, Tensor):
            return False
        if not isinstance(x, Tensor):
            if x != y:
                return False
            continue
        if not (x.shape == y.shape and x.dtype == y.dtype and torch.equal(x.isnan(), y.isnan())):
            return False
        if not tolerance or not x.is_floating_point():
            if not torch.equal(x.nan_to_num(), y.nan_to_num()):
                return False
            continue
        finite, inf = y.isfinite(), y.isinf()
        if not torch.equal(x.isfinite(), finite) or not torch.equal(x[inf], y[inf]):  # Inf where Inf, same sign
            return False
        x, y = x[finite].double(), y[finite].double()
        if x.numel() and float((x - y).abs().max()) > tolerance * max(1.0, float(y.abs().max())):
            return False
    return True


def trace(model: nn.Module, inputs: tuple[Tensor, ...], other: tuple[Tensor, ...]) -> fx.GraphModule | None:
    """The traced ``model`` (augmented assignments in place) if it runs on ``other`` (another batch size) and
    on ``inputs`` gives what ``model`` gives, bit for bit; else None."""
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
        ShapeProp(gm).propagate(*_clone(inputs))  # which operands are tensors
        for node in gm.graph.nodes:
            op = node.meta.pop("augmented", None)
            if op is not None and isinstance(node.args[0], fx.Node) and isinstance(node.args[0].meta.get("tensor_meta"), TensorMetadata):
                if op not in _IN_PLACE:
                    return None
                node.op, node.target = "call_method", _IN_PLACE[op]
        gm.recompile()
        ShapeProp(gm).propagate(*_clone(other))
        shapes = {n: n.meta.get("tensor_meta") for n in gm.graph.nodes}
        ShapeProp(gm).propagate(*_clone(inputs))
        for node in gm.graph.nodes:
            now, then = node.meta.get("tensor_meta"), shapes[node]
            if isinstance(now, TensorMetadata) and isinstance(then, TensorMetadata):
                node.meta["batch_shapes"] = (tuple(now.shape), tuple(then.shape))
        if not same_outputs(gm(*_clone(inputs)), model(*_clone(inputs))):
            return None
    except Exception:  # data-dependent control flow, unsupported ops, one batch size only...: the per-layer path
        return None
    return gm


def _writes_inplace_arg(fn, args, kwargs) -> bool:
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return "inplace" in kwargs and kwargs["inplace"] is not False
    return bound.arguments.get("inplace", False) is not False


def writes(node: fx.Node, modules: dict[str, nn.Module]) -> list | None:
    """What ``node`` may write to: [] for nothing, the written arguments, or None for unknown (anything)."""
    first = [node.args[0]] if node.args else None
    if node.op in ("placeholder", "get_attr", "output"):
        return []
    if node.op == "call_module":
        m = modules.get(node.target)
        if getattr(m, "inplace", False):
            return first
        return [] if type(m).__module__.startswith(("torch.nn.", "nptm.sparse.")) else None
    if node.op == "call_method":
        return first if node.target.endswith("_") or "out" in node.kwargs else []
    target = node.target
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        schemas = [target._schema] if isinstance(target, torch._ops.OpOverload) else \
            [getattr(target, o)._schema for o in target.overloads()]
        return None if any(s.is_mutable for s in schemas) else []
    if target in _WRITING_OPERATORS:
        return first
    try:
        name = _get_qualified_name(target)
    except Exception:
        return None
    if name.startswith(("operator.", "_operator.")) or getattr(builtins, name, None) is target:
        return []
    if not name.startswith(("torch.", "math.")) or "out" in node.kwargs:
        return None  # a user's function (fx.wrap) may write anything; out= writes its tensor
    return first if name.endswith("_") or _writes_inplace_arg(target, node.args, node.kwargs) else []


def writes_between(first: fx.Node, last: fx.Node, modules: dict[str, nn.Module], skip=()) -> bool:
    """Whether a node strictly between ``first`` and ``last`` (graph order), ``skip`` aside, may write to anything."""
    node = first.next
    while node is not last and node.op != "root":
        if node not in skip and writes(node, modules) != []:
            return True
        node = node.next
    return False


class _Reads(TorchFunctionMode):
    """Notes the owners of each tensor a torch function reads outside every owner's forward."""

    def __init__(self, owners: dict[int, set[str]]):
        super().__init__()
        self.owners, self.inside, self.outside = owners, [], set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        for t in tree_flatten((args, kwargs or {}))[0]:
            names = self.owners.get(id(t)) if isinstance(t, Tensor) else None
            if names and not names.intersection(self.inside):
                self.outside |= names
        return func(*args, **(kwargs or {}))


def read_outside(model: nn.Module, inputs: tuple[Tensor, ...], names) -> set[str]:
    """Of the modules ``names``, those whose parameters or buffers ``model`` reads on ``inputs`` other than in
    the forward of a module holding them (``F.linear(h, self.fc.weight.t())``, ``self.fc.weight.shape``)."""
    modules, owners = dict(model.named_modules()), {}
    for n in names:
        for t in [*modules[n].parameters(False), *modules[n].buffers(False)]:
            owners.setdefault(id(t), set()).add(n)
    mode = _Reads(owners)
    hooks = []
    for n in names:
        hooks.append(modules[n].register_forward_pre_hook(lambda m, a, n=n: mode.inside.append(n) and None))
        hooks.append(modules[n].register_forward_hook(lambda m, a, o: mode.inside.pop() and None))
    try:
        with mode:
            model(*_clone(inputs))
    finally:
        for h in hooks:
            h.remove()
    return mode.outside

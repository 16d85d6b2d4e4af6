"""Sparsified models on disk without pickled code: the fx graph as plain data (ops, targets by name, args),
each module as its class name, plain attributes and tensors. ``load_sparse`` reads with ``weights_only=True``
and resolves targets only among tensor functions (``torch``'s ATen functions, ``torch.nn.functional``,
``operator``, ``getattr`` of non-dunder names) and modules only among ``torch.nn``'s and nptm.sparse's."""
from __future__ import annotations

import builtins
import operator
import os
import pickle
import zipfile

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from nptm.sparse import modules as sparse_modules

FORMAT = "nptm.sparse/1"
_FUNCTION_SPACES = {"torch": torch, "torch.nn.functional": F, "operator": operator}
_MODULE_SPACES = {"torch.nn": nn, "nptm.sparse": sparse_modules}
_PLAIN = (int, float, bool, str, type(None))
_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # hooks, parameter/buffer/child dicts, training


class SparseFileError(ValueError):
    """A file that is not a readable sparse-model file (the message names it)."""


def _function_name(fn) -> str:
    if fn is builtins.getattr:
        return "builtins:getattr"
    for space, mod in _FUNCTION_SPACES.items():
        name = getattr(fn, "__name__", None)
        if name and getattr(mod, name, None) is fn:
            return f"{space}:{name}"
    raise ValueError(f"save_sparse: cannot save a call to {fn!r} (only torch, torch.nn.functional and operator functions)")


def _resolve_function(name: str):
    space, _, attr = name.partition(":")
    if name == "builtins:getattr":
        return builtins.getattr
    allowed = space in _FUNCTION_SPACES and not attr.startswith("_")
    if space == "torch":  # ATen tensor functions only (no torch.load, torch.save, ...)
        allowed = allowed and hasattr(torch._C._VariableFunctions, attr)
    fn = getattr(_FUNCTION_SPACES.get(space), attr, None) if allowed else None
    if not callable(fn):
        raise ValueError(f"function {name!r} is not allowed")
    return fn


def _encode(v):
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, (list, tuple)):
        items = [_encode(x) for x in v]
        return items if isinstance(v, list) else {"tuple": items}
    if isinstance(v, dict):
        return {"dict": [[k, _encode(x)] for k, x in v.items()]}
    if isinstance(v, slice):
        return {"slice": [_encode(v.start), _encode(v.stop), _encode(v.step)]}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if v is Ellipsis:
        return {"ellipsis": True}
    raise ValueError(f"save_sparse: cannot save an argument of type {type(v).__name__}")


def _decode(v, nodes: dict[str, fx.Node]):
    if isinstance(v, list):
        return [_decode(x, nodes) for x in v]
    if not isinstance(v, dict):
        return v
    (kind, x), = v.items()
    if kind == "node":
        return nodes[x]
    if kind == "tuple":
        return tuple(_decode(i, nodes) for i in x)
    if kind == "dict":
        return {k: _decode(i, nodes) for k, i in x}
    if kind == "slice":
        return slice(*(_decode(i, nodes) for i in x))
    if kind in ("dtype", "memory_format"):
        found = getattr(torch, x, None)
        if not isinstance(found, (torch.dtype, torch.memory_format)):
            raise ValueError(f"unknown {kind} {x!r}")
        return found
    if kind == "device":
        return torch.device(x)
    if kind == "ellipsis":
        return Ellipsis
    raise ValueError(f"unknown argument kind {kind!r}")


def _plain(v) -> bool:
    return isinstance(v, _PLAIN) or (isinstance(v, (list, tuple)) and all(_plain(x) for x in v))


def _module_record(m: nn.Module) -> dict:
    cls = type(m)
    space = next((s for s, mod in _MODULE_SPACES.items() if getattr(mod, cls.__name__, None) is cls), None)
    if space is None:
        raise ValueError(f"save_sparse: cannot save a {cls.__module__}.{cls.__name__} (torch.nn and nptm.sparse modules only)")
    attrs = {k: v for k, v in vars(m).items() if k not in _MODULE_INTERNALS and _plain(v)}
    return {"class": f"{space}:{cls.__name__}", "attrs": attrs,
            "parameters": {k: p.detach() for k, p in m._parameters.items() if p is not None},
            "buffers": {k: b for k, b in m._buffers.items() if b is not None},
            "children": {k: _module_record(c) for k, c in m._modules.items() if c is not None}}


def _build_module(rec: dict) -> nn.Module:
    space, _, name = rec["class"].partition(":")
    cls = getattr(_MODULE_SPACES.get(space), name, None) if not name.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"module class {rec['class']!r} is not allowed")
    m = cls.__new__(cls)
    nn.Module.__init__(m)
    for k, v in rec["attrs"].items():
        object.__setattr__(m, k, v)
    for k, t in rec["parameters"].items():
        m.register_parameter(k, nn.Parameter(t, requires_grad=False))
    for k, t in rec["buffers"].items():
        m.register_buffer(k, t)
    for k, c in rec["children"].items():
        m.add_module(k, _build_module(c))
    return m.eval()


def save_sparse(module: fx.GraphModule, path: str | os.PathLike) -> None:
    """Write a ``sparsify``'d module (atomically) for ``load_sparse``."""
    if not isinstance(module, fx.GraphModule):
        raise ValueError("save_sparse: the module is not a traced graph (sparsify could not trace this model with torch.fx)")
    called = {n.target for n in module.graph.nodes if n.op == "call_module"}
    fetched = {n.target for n in module.graph.nodes if n.op == "get_attr"}
    nodes = []
    for n in module.graph.nodes:
        target = _function_name(n.target) if n.op == "call_function" else n.target
        nodes.append({"op": n.op, "name": n.name, "target": target, "args": _encode(n.args), "kwargs": _encode(n.kwargs)})
    payload = {
        "format": FORMAT,
        "nodes": nodes,
        "modules": {t: _module_record(module.get_submodule(t)) for t in sorted(called)},
        "attributes": {t: module.get_parameter(t).detach() if t in dict(module.named_parameters()) else module.get_buffer(t)
                       for t in sorted(fetched)},
    }
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read(path: str | os.PathLike) -> dict:
    where = os.fspath(path)
    try:
        payload = torch.load(where, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SparseFileError(f"{where}: no such file") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SparseFileError(f"{where} is not a readable sparse-model file ({reason[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SparseFileError(f"{where} is not a sparse-model file ({FORMAT})")
    return payload


def load_sparse(path: str | os.PathLike) -> fx.GraphModule:
    """The module ``save_sparse`` wrote, in eval mode."""
    payload, where = _read(path), os.fspath(path)
    try:
        root = nn.Module()
        for target, rec in payload["modules"].items():
            _install(root, target, _build_module(rec))
        for target, t in payload["attributes"].items():
            _install_tensor(root, target, t)
        graph, nodes = fx.Graph(), {}
        for rec in payload["nodes"]:
            op = rec["op"]
            target = _resolve_function(rec["target"]) if op == "call_function" else rec["target"]
            args, kwargs = _decode(rec["args"], nodes), _decode(rec["kwargs"], nodes)
            _check_call(op, target, args)
            if op == "output":
                graph.output(args[0])
                continue
            node = graph.create_node(op, target, tuple(args) if isinstance(args, list) else args, kwargs, name=rec["name"])
            nodes[rec["name"]] = node
        graph.lint()
        return fx.GraphModule(root, graph).eval()
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise SparseFileError(f"{where} holds a malformed sparse model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _check_call(op: str, target, args) -> None:
    """Methods of tensors and getattr of public names only."""
    if op == "call_method" and not (isinstance(target, str) and not target.startswith("_") and hasattr(Tensor, target)):
        raise ValueError(f"method {target!r} is not allowed")
    if target is builtins.getattr and not (len(args) == 2 and isinstance(args[1], str) and not args[1].startswith("_")):
        raise ValueError(f"getattr of {args[1:]!r} is not allowed")


def _parent(root: nn.Module, target: str) -> tuple[nn.Module, str]:
    parent = root
    *path, name = target.split(".")
    for p in path:
        if not hasattr(parent, p):
            parent.add_module(p, nn.Module())
        parent = getattr(parent, p)
    return parent, name


def _install(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, name = _parent(root, target)
    parent.add_module(name, module)


def _install_tensor(root: nn.Module, target: str, t: Tensor) -> None:
    parent, name = _parent(root, target)
    parent.register_buffer(name, t)

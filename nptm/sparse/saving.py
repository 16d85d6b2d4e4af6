"""Sparsified models on disk as plain data (format ``nptm.sparse/2``): the program's steps (``program.py``),
each called module as a class name from ``MODULE_CLASSES`` with plain arguments and its tensors, the tensors
the program reads, and the per-layer choices. ``load_sparse`` reads with ``weights_only=True``, checks
everything (names, classes, arguments, tensor dtypes and shapes, the compressed weights' indices) and
returns a ``SparseProgram``; no Python source is generated and nothing from the file runs before the checks."""
from __future__ import annotations

import dataclasses
import inspect
import keyword
import math
import os
import re
from typing import Callable

import torch
from torch import Tensor, fx, nn

from nptm.sparse.choose import LayerChoice
from nptm.sparse import modules as sparse_modules
from nptm.sparse.dense import DenseConv2d
from nptm.sparse.modules import ChannelsLastMaxPool2d, SparseConv2d, SparseLinear
from nptm.sparse.program import SparseProgram, check, encode, function_name, is_identifier, is_path, tensor_owner

FORMAT = "nptm.sparse/2"
MAX_DIM = 1 << 24  # any one dimension of a compressed weight
MAX_WEIGHT = 1 << 36  # elements of a compressed weight's dense form
# Output channels per stored entry the kernel runs: 1, and the register-blocked forms where the modules have them.
_BLOCKS = tuple(sparse_modules.BLOCK_COST["avx2"])


class SparseFileError(ValueError):
    """A file that is not a readable sparse-model file (the message names it)."""


def _plain(v, depth: int = 0) -> bool:
    if v is None or isinstance(v, (bool, float, str)):
        return not isinstance(v, str) or len(v) <= 64
    if isinstance(v, int):
        return abs(v) < 1 << 62
    return isinstance(v, (list, tuple)) and depth < 2 and len(v) <= 8 and all(_plain(x, depth + 1) for x in v)


def _check_tensor(t, what: str, dtypes: tuple[torch.dtype, ...] | None = None) -> Tensor:
    check(type(t) in (Tensor, nn.Parameter) and t.layout == torch.strided and t.device.type == "cpu" and not t.is_quantized,
          f"{what} is not a plain CPU tensor")
    check(t.is_contiguous(), f"{what} is not contiguous")
    check(dtypes is None or t.dtype in dtypes, f"{what} has dtype {t.dtype}, expected {' or '.join(map(str, dtypes or ()))}")
    return t.detach()


# --- torch.nn layers: rebuilt by their own constructor (on the meta device) from plain arguments ----------
_CTOR_SKIP = {"self", "device", "dtype"}


def _ctor_params(cls: type) -> list[str]:
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in _CTOR_SKIP and not p.name.startswith("_") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _ctor_args(m: nn.Module, flags: dict[str, str]) -> dict:
    """The constructor arguments that rebuild ``m``'s structure: its attributes of those names, an optional
    tensor such as ``bias`` as whether it exists (``flags``: argument -> the tensor it creates, where they differ)."""
    args = {}
    for p in _ctor_params(type(m)):
        if p in flags or p in m._parameters or p in m._buffers:
            args[p] = getattr(m, flags.get(p, p), None) is not None
        elif p in vars(m) and _plain(vars(m)[p]):
            args[p] = vars(m)[p]
    return args


def _layer_tensors(m: nn.Module) -> dict[str, Tensor]:
    return {**{k: p.detach() for k, p in m.named_parameters()}, **dict(m.named_buffers())}


def _build_layer(cls: type, args: dict, tensors: dict) -> nn.Module:
    params = _ctor_params(cls)
    for k, v in args.items():
        check(k in params and _plain(v), f"{cls.__name__} argument {str(k)[:40]!r} is not allowed")
    with torch.device("meta"):
        m = cls(**args)
    expected = _layer_tensors(m)
    check(set(tensors) == set(expected), f"{cls.__name__} holds tensors {sorted(tensors)[:8]}, expected {sorted(expected)}")
    for name, meta in expected.items():
        t = _check_tensor(tensors[name], f"{cls.__name__} tensor {name}")
        check(t.shape == meta.shape, f"{cls.__name__} tensor {name} has shape {list(t.shape)}, expected {list(meta.shape)}")
        check(t.dtype == meta.dtype or (t.dtype.is_floating_point and meta.dtype.is_floating_point),
              f"{cls.__name__} tensor {name} has dtype {t.dtype}, expected {meta.dtype}")
        owner, leaf = tensor_owner(m, name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = nn.Parameter(t, requires_grad=False)
        else:
            owner._buffers[leaf] = t
    return m


# --- the sparse layers: compressed weights, checked so that the kernel never indexes outside them -------
_FLOAT = ("float", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))


def _ints(n: int, least: int) -> tuple[str, Callable]:
    return (f"{n} ints >= {least}",
            lambda v: isinstance(v, (tuple, list)) and len(v) == n and all(type(x) is int and least <= x < MAX_DIM for x in v))


_COMPRESSED_ATTRS = {
    SparseConv2d: {"weight_shape": _ints(4, 1), "stride": _ints(2, 1), "padding": _ints(2, 0), "dilation": _ints(2, 1),
                   "groups": ("an int >= 1", lambda v: type(v) is int and 1 <= v < MAX_DIM), "clamp_min": _FLOAT, "clamp_max": _FLOAT},
    SparseLinear: {"weight_shape": _ints(2, 1), "clamp_min": _FLOAT, "clamp_max": _FLOAT},
}


def _compressed_args(m: nn.Module) -> dict:
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}


def _compressed_tensors(m: nn.Module) -> dict[str, Tensor]:
    return {k: b for k, b in m._buffers.items() if b is not None}


def _build_compressed(cls: type, args: dict, tensors: dict) -> nn.Module:
    spec, name = _COMPRESSED_ATTRS[cls], cls.__name__
    check(set(args) == set(spec), f"{name} attributes {sorted(args)[:10]}, expected {sorted(spec)}")
    for k, (want, ok) in spec.items():
        check(ok(args[k]), f"{name} {k} must be {want}")
    check(set(tensors) <= {"values", "taps", "row_ptr", "bias"} and {"values", "taps", "row_ptr"} <= set(tensors),
          f"{name} holds tensors {sorted(tensors)[:8]}, expected values, taps, row_ptr and an optional bias")
    shape = tuple(args["weight_shape"])
    cout, per_row = shape[0], math.prod(shape[1:])
    check(per_row < 1 << 31 and cout * per_row <= MAX_WEIGHT, f"{name} weight_shape {list(shape)} is too large")
    groups = args.get("groups", 1)
    check(cout % groups == 0, f"{name} groups must divide the {cout} output channels")
    values = _check_tensor(tensors["values"], f"{name} values", (torch.float32,))
    taps = _check_tensor(tensors["taps"], f"{name} taps", (torch.int32,))
    row_ptr = _check_tensor(tensors["row_ptr"], f"{name} row_ptr", (torch.int64,))
    block = values.shape[1] if values.dim() == 2 else 1
    check(values.dim() in (1, 2) and block in _BLOCKS, f"{name} values must be [n] or [n, block], block in {_BLOCKS}")
    rows, entries = groups * -(-(cout // groups) // block), values.shape[0]  # a row: `block` output channels
    check(taps.shape == (entries,) and entries <= rows * per_row, f"{name} must hold one tap per stored entry")
    check(row_ptr.shape == (rows + 1,) and int(row_ptr[0]) == 0 and int(row_ptr[-1]) == entries
          and bool((row_ptr.diff() >= 0).all()), f"{name} row_ptr must be {rows + 1} values rising from 0 to {entries}")
    check(taps.numel() == 0 or (int(taps.min()) >= 0 and int(taps.max()) < per_row), f"{name} taps must lie in [0, {per_row})")
    starts = torch.zeros(entries, dtype=torch.bool)
    starts[row_ptr[:-1][row_ptr[:-1] < entries]] = True
    check(bool(((taps.diff() > 0) | starts[1:]).all()), f"{name} taps must rise within each row")
    bias = tensors.get("bias")
    if bias is not None:
        bias = _check_tensor(bias, f"{name} bias", (torch.float32,))
        check(bias.shape == (cout,), f"{name} bias must have {cout} values")
    m = cls.__new__(cls)
    nn.Module.__init__(m)
    for k, v in args.items():
        setattr(m, k, tuple(v) if isinstance(v, list) else v)
    for k, t in (("values", values), ("taps", taps), ("row_ptr", row_ptr), ("bias", bias)):
        m.register_buffer(k, None if t is None else t.clone())  # shares memory with nothing else in the file
    return m


# --- DenseConv2d: the plain weight (oneDNN's packed copy is made again at run time), checked as a conv's ---------
_DENSE_ATTRS = {k: v for k, v in _COMPRESSED_ATTRS[SparseConv2d].items() if k != "weight_shape"}


def _dense_args(m: DenseConv2d) -> dict:
    return {k: getattr(m, k) for k in _DENSE_ATTRS}


def _build_dense(cls: type, args: dict, tensors: dict) -> nn.Module:
    check(set(args) == set(_DENSE_ATTRS), f"DenseConv2d attributes {sorted(args)[:10]}, expected {sorted(_DENSE_ATTRS)}")
    for k, (want, ok) in _DENSE_ATTRS.items():
        check(ok(args[k]), f"DenseConv2d {k} must be {want}")
    check("weight" in tensors and set(tensors) <= {"weight", "bias"}, f"DenseConv2d holds tensors {sorted(tensors)[:8]}, "
          "expected weight and an optional bias")
    weight = _check_tensor(tensors["weight"], "DenseConv2d weight", (torch.float32,))
    check(weight.dim() == 4 and all(1 <= d < MAX_DIM for d in weight.shape), "DenseConv2d weight must be 4-D, not empty")
    check(weight.shape[0] % args["groups"] == 0, f"DenseConv2d groups must divide the {weight.shape[0]} output channels")
    bias = tensors.get("bias")
    if bias is not None:
        bias = _check_tensor(bias, "DenseConv2d bias", (torch.float32,))
        check(bias.shape == weight.shape[:1], f"DenseConv2d bias must have {weight.shape[0]} values")
    m = cls(weight.clone(), None if bias is None else bias.clone(), args["stride"], args["padding"], args["dilation"],
            args["groups"])
    m.clamp_min, m.clamp_max = args["clamp_min"], args["clamp_max"]
    return m


def _layer(**flags: str) -> tuple:
    return (lambda m: _ctor_args(m, flags), _layer_tensors, _build_layer)


# Class name -> (class, (its record's arguments, its tensors, its builder)). Adding a class is one line.
_LAYER = _layer()
_COMPRESSED = (_compressed_args, _compressed_tensors, _build_compressed)
_DENSE = (_dense_args, _compressed_tensors, _build_dense)
MODULE_CLASSES: dict[str, tuple[type, tuple]] = {c.__name__: (c, how) for c, how in (
    (nn.Conv1d, _LAYER), (nn.Conv2d, _LAYER), (nn.ConvTranspose2d, _LAYER), (nn.Linear, _LAYER), (nn.Bilinear, _LAYER),
    (nn.BatchNorm1d, _LAYER), (nn.BatchNorm2d, _LAYER), (nn.LayerNorm, _LAYER), (nn.GroupNorm, _LAYER), (nn.Embedding, _LAYER),
    (nn.ReLU, _LAYER), (nn.ReLU6, _LAYER), (nn.LeakyReLU, _LAYER), (nn.PReLU, _LAYER), (nn.ELU, _LAYER), (nn.GELU, _LAYER),
    (nn.SiLU, _LAYER), (nn.Mish, _LAYER), (nn.Hardswish, _LAYER), (nn.Hardsigmoid, _LAYER), (nn.Hardtanh, _LAYER),
    (nn.Sigmoid, _LAYER), (nn.Tanh, _LAYER), (nn.Softmax, _LAYER), (nn.LogSoftmax, _LAYER),
    (nn.MaxPool1d, _LAYER), (nn.MaxPool2d, _LAYER), (nn.AvgPool1d, _LAYER), (nn.AvgPool2d, _LAYER),
    (nn.AdaptiveAvgPool1d, _LAYER), (nn.AdaptiveAvgPool2d, _LAYER), (nn.AdaptiveMaxPool2d, _LAYER),
    (nn.Dropout, _LAYER), (nn.Dropout2d, _LAYER), (nn.Flatten, _LAYER), (nn.Unflatten, _LAYER), (nn.Identity, _LAYER),
    (nn.Upsample, _LAYER), (nn.ZeroPad2d, _LAYER), (nn.MultiheadAttention, _layer(bias="in_proj_bias", add_bias_kv="bias_k")),
    (ChannelsLastMaxPool2d, _LAYER), (SparseConv2d, _COMPRESSED), (SparseLinear, _COMPRESSED), (DenseConv2d, _DENSE),
)}
# Layers whose tensors the program may not read (their checked buffers, and the packed copy of a dense weight).
_PROTECTED = tuple(c for c, how in MODULE_CLASSES.values() if how in (_COMPRESSED, _DENSE))


def _record(m: nn.Module, path: str) -> dict:
    how = MODULE_CLASSES.get(type(m).__name__)
    if how is None or how[0] is not type(m):
        raise ValueError(f"save_sparse: cannot save {path} ({type(m).__module__}.{type(m).__name__} is not in "
                         "nptm.sparse.saving.MODULE_CLASSES)")
    record_args, record_tensors, build = how[1]
    rec = {"class": type(m).__name__, "args": record_args(m), "tensors": record_tensors(m)}
    try:  # what load will build from the record must be the module: the same plain attributes
        rebuilt = vars(build(type(m), rec["args"], rec["tensors"]))
        lost = [k for k, v in vars(m).items() if k != "training" and _plain(v) and rebuilt.get(k, v) != v]
    except ValueError as e:
        lost = [str(e)]
    check(not lost, f"save_sparse: cannot save {path} faithfully ({type(m).__name__}: {', '.join(lost)[:120]})")
    return rec


def _public_part(p: str) -> str:
    q = re.sub(r"[^A-Za-z0-9_]", "_", p)
    q = q if q.isdigit() or q[:1].isalpha() else "u" + q
    return q + "_" if keyword.iskeyword(q) else q


def _public(name: str, what: str) -> str:
    """``name`` with each part made an allowed identifier (``_x`` -> ``u_x``, ``block1-0`` -> ``block1_0``)."""
    out = ".".join(_public_part(p) for p in name.split("."))
    check(is_path(out), f"save_sparse: cannot save the {what} name {name!r}")
    return out


def _fx_records(gm: fx.GraphModule) -> list[dict]:
    names: dict[fx.Node, str] = {}
    taken: set[str] = set()
    for i, n in enumerate(gm.graph.nodes):
        name = _public(n.name, "step")
        names[n] = name if name not in taken else f"{name}_n{i}"
        check(names[n] not in taken, f"save_sparse: two steps named {names[n]}")
        taken.add(names[n])
    records = []
    for n in gm.graph.nodes:
        if n.op == "call_function":
            target = function_name(n.target)
        elif n.op in ("get_attr", "call_module"):
            target = _public(n.target, "module/attribute")
        else:
            target = n.target if n.op == "output" else _public(n.target, "input")
        records.append({"op": n.op, "name": names[n], "target": target, "args": encode(list(n.args), names),
                        "kwargs": encode(dict(n.kwargs), names)})
    return records


def _choice_record(c: LayerChoice) -> dict:
    d = dataclasses.asdict(c)
    d["name"] = _public(d["name"], "layer")  # as the loaded model names the layer
    return d


def save_sparse(module: nn.Module, path: str | os.PathLike) -> None:
    """Write a ``sparsify``'d (or ``load_sparse``'d) module atomically for ``load_sparse``."""
    if isinstance(module, SparseProgram):
        records, targets = module._records, {r["target"]: r["target"] for r in module._records}
    elif isinstance(module, fx.GraphModule):
        records, targets = _fx_records(module), {}
        for n in module.graph.nodes:
            if n.op in ("get_attr", "call_module"):
                check(targets.setdefault(_public(n.target, "module"), n.target) == n.target,
                      f"save_sparse: {n.target} and {targets.get(_public(n.target, 'module'))} would have one name in the file")
    else:
        raise ValueError("save_sparse: the module is not a traced graph (sparsify could not trace this model with torch.fx)")
    called = sorted({r["target"] for r in records if r["op"] == "call_module"})
    nested = [(a, b) for a, b in zip(called, called[1:]) if b.startswith(a + ".")]
    check(not nested, f"save_sparse: {nested[:1]} calls a layer and a layer inside it (one of them is traced as a leaf)")
    modules = {t: _record(module.get_submodule(targets[t]), t) for t in called}
    attributes, taken = {}, {p.split(".")[0] for p in [*called, *targets]}
    for t in sorted({r["target"] for r in records if r["op"] == "get_attr"}):
        layer = next((c for c in called if t.startswith(c + ".")), None)
        if layer is not None and type(module.get_submodule(targets[layer])) not in _PROTECTED \
                and t[len(layer) + 1:] in modules[layer]["tensors"]:
            continue  # the layer's own tensor (a tied or re-read weight stays tied)
        parent, _, leaf = targets[t].rpartition(".")
        tensor = getattr(module.get_submodule(parent), leaf)  # fx keeps traced constants as plain attributes
        check(isinstance(tensor, Tensor), f"save_sparse: {targets[t]} is not a tensor")
        name = t
        if layer is not None:  # a tensor the layer's record does not restore, or one load keeps out of reach: a copy
            name = _public_part(t.replace(".", "_"))
            while name in taken:
                name += "_"
            taken.add(name)
            records = [dict(r, target=name) if r["op"] == "get_attr" and r["target"] == t else r for r in records]
        attributes[name] = tensor.detach().clone()
    choices = getattr(module, "sparse_layers", None)
    payload = {"format": FORMAT, "steps": records, "modules": modules, "attributes": attributes,
               "sparse_layers": None if choices is None else [_choice_record(c) for c in choices]}
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read(where: str) -> dict:
    try:
        payload = torch.load(where, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SparseFileError(f"{where}: no such file") from None
    except Exception as e:  # UnpicklingError (a refused global), BadZipFile, EOFError, RuntimeError, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SparseFileError(f"{where} is not a readable sparse-model file ({reason[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        hint = f"; it holds format {str(found)[:40]!r}, save it again with this nptm" if isinstance(found, str) else ""
        raise SparseFileError(f"{where} is not a sparse-model file ({FORMAT}{hint})")
    return payload


def _install(root: nn.Module, path: str, place: Callable[[nn.Module, str], None], layers: set[str]) -> None:
    """Create the containers on ``path`` (plain modules), then ``place`` the last part in its parent."""
    parent, *parts = root, *path.split(".")
    for i, p in enumerate(parts[:-1]):
        check(".".join(parts[: i + 1]) not in layers, f"{path!r} lies inside a layer")
        if p not in parent._modules:
            parent.add_module(p, nn.Module())
        parent = parent._modules[p]
    place(parent, parts[-1])


def _data(v, depth: int = 0) -> bool:
    """Plain data: numbers, strings, None, and lists / tuples / dicts of them, bounded."""
    if v is None or isinstance(v, (bool, int, float)):
        return True
    if isinstance(v, str):
        return len(v) <= 4096
    if depth >= 4 or not isinstance(v, (list, tuple, dict)) or len(v) > 4096:
        return False
    items = [x for kv in v.items() for x in kv] if isinstance(v, dict) else v
    return all(_data(x, depth + 1) for x in items)


def _choices(data) -> list[LayerChoice] | None:
    if data is None:
        return None
    fields = {f.name for f in dataclasses.fields(LayerChoice)}
    check(isinstance(data, list) and len(data) <= 100_000, "sparse_layers is not a list")
    out = []
    for d in data:
        check(isinstance(d, dict) and set(d) <= fields and _data(d), "a sparse_layers entry is not a LayerChoice record")
        out.append(LayerChoice(**{k: tuple(v) if k == "shape" else v for k, v in d.items()}))
    return out


def _build(payload: dict) -> SparseProgram:
    check(set(payload) == {"format", "steps", "modules", "attributes", "sparse_layers"}, "unexpected or missing sections")
    modules, attributes = payload["modules"], payload["attributes"]
    check(isinstance(modules, dict) and isinstance(attributes, dict), "modules and attributes must be dicts")
    check(all(is_path(p) for p in [*modules, *attributes]), "a module or attribute path is not an identifier path")
    program = SparseProgram(payload["steps"], set(modules), _PROTECTED)
    layers: set[str] = set()
    for path in sorted(modules, key=lambda p: p.count(".")):
        rec = modules[path]
        check(isinstance(rec, dict) and set(rec) == {"class", "args", "tensors"}, f"module {path}: not a module record")
        check(isinstance(rec["args"], dict) and isinstance(rec["tensors"], dict), f"module {path}: bad record")
        cls, how = MODULE_CLASSES.get(rec["class"], (None, None)) if isinstance(rec["class"], str) else (None, None)
        check(cls is not None, f"module {path}: class {str(rec['class'])[:60]!r} is not allowed")
        check(all(is_identifier(k) for k in rec["args"]) and all(is_path(k) for k in rec["tensors"]), f"module {path}: bad names")
        m = how[2](cls, rec["args"], rec["tensors"])
        _install(program, path, lambda parent, leaf: parent.add_module(leaf, m.eval()), layers)
        layers.add(path)
    for path, t in attributes.items():
        t = _check_tensor(t, f"attribute {path}")
        _install(program, path, lambda parent, leaf: parent.register_buffer(leaf, t), layers)
    program.compile()
    program.sparse_layers = _choices(payload["sparse_layers"])
    return program.eval()


def load_sparse(path: str | os.PathLike) -> SparseProgram:
    """The module ``save_sparse`` wrote, in eval mode; ``SparseFileError`` naming the file if anything in it is
    not as ``save_sparse`` writes it (checked before anything runs)."""
    where = os.fspath(path)
    payload = _read(where)
    try:
        return _build(payload)
    except Exception as e:  # only torch's own constructors and checks ran; any failure means a malformed file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SparseFileError(f"{where} holds a malformed sparse model ({reason[:200]})") from None

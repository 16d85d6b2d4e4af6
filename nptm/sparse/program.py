"""A traced model as plain data, and the small interpreter that runs it: no Python source is ever generated.

A program is a list of steps (``placeholder``, ``get_attr``, ``call_function``, ``call_method``,
``call_module``, ``output``, as ``torch.fx`` records them) whose arguments are plain values and references to
earlier steps. ``SparseProgram`` validates every step against explicit lists before anything runs: functions
only from ``FUNCTIONS``, tensor methods only from ``METHODS``, ``getattr`` only of ``TENSOR_ATTRIBUTES`` on a
tensor, module and attribute targets only as identifier paths that resolve in its own module tree."""
from __future__ import annotations

import builtins
import importlib
import keyword
import operator
import re
import sys
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn


def _table(space: str, mod, names: str) -> dict[str, Any]:
    return {f"{space}:{n}": getattr(mod, n) for n in names.split()}


# Tensor operations a traced CNN / MLP / transformer-style model calls. Never: anything that reads or writes
# files (torch.load/save/from_file), reaches attributes by name (operator.attrgetter/methodcaller/call), or
# writes into its arguments' containers (operator.setitem).
FUNCTIONS: dict[str, Any] = {
    **_table("torch", torch, "abs add addmm amax amin argmax argmin arange baddbmm bmm cat chunk clamp clamp_max clamp_min "
             "clone concat cos cumsum div einsum erf exp flatten flip full full_like gather index_select log log_softmax "
             "masked_fill matmul max maximum mean min minimum mm mul narrow neg ones ones_like permute pow relu relu_ reshape "
             "roll rsqrt sigmoid sin softmax split sqrt square squeeze stack std sub sum t tanh topk transpose unbind unsqueeze "
             "var where zeros zeros_like"),
    **_table("torch.nn.functional", F, "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool1d adaptive_max_pool2d "
             "avg_pool1d avg_pool2d batch_norm conv1d conv2d dropout dropout1d dropout2d elu embedding gelu group_norm "
             "hardsigmoid hardswish hardtanh interpolate layer_norm leaky_relu linear log_softmax max_pool1d max_pool2d mish "
             "normalize pad relu relu6 relu_ scaled_dot_product_attention selu sigmoid silu softmax softplus tanh"),
    **_table("operator", operator, "abs add and_ eq floordiv ge getitem gt iadd imul isub itruediv le lt matmul mod mul "
             "ne neg or_ pos pow sub truediv"),
    "builtins:getattr": builtins.getattr,
    "torch:_assert": torch._assert,  # raises when its condition is false (fx keeps it)
}
# Tensor functions of optional packages (module, name), imported when a program names one.
OPTIONAL_FUNCTIONS = {"torchvision.ops:stochastic_depth": ("torchvision.ops", "stochastic_depth")}
METHODS = frozenset(
    "abs add add_ addmm amax argmax bmm chunk clamp clamp_ clamp_min clone contiguous cos cumsum detach dim div div_ double "
    "exp expand expand_as flatten flip float gather half masked_fill masked_fill_ matmul max mean min mm mul mul_ narrow "
    "ndimension neg new_ones new_zeros norm numel permute pow relu relu_ repeat reshape reshape_as sigmoid sigmoid_ size "
    "softmax log_softmax split sqrt squeeze std sub sub_ sum t tanh tanh_ to transpose type_as unbind unflatten unsqueeze "
    "var view view_as".split())
TENSOR_ATTRIBUTES = frozenset("shape dtype device ndim T mT".split())
_FUNCTION_NAMES = {id(fn): name for name, fn in reversed(FUNCTIONS.items())}
_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*|[0-9]+")
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
                                                      torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)}
_FORMATS = {str(f).removeprefix("torch."): f for f in (torch.contiguous_format, torch.channels_last, torch.preserve_format)}
_DEVICE = re.compile(r"(cpu|cuda|meta)(:[0-9]{1,3})?")
_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
MAX_STEPS, MAX_ITEMS, MAX_DEPTH, MAX_NAME, MAX_STR = 200_000, 100_000, 16, 256, 4096


def is_path(name) -> bool:
    """A dotted path whose parts are identifiers not starting with ``_`` (or indices), never keywords."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME and all(
        _PART.fullmatch(p) and not keyword.iskeyword(p) for p in name.split("."))


def is_identifier(name) -> bool:
    return is_path(name) and "." not in name and not name.isdigit()


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def function(name: str):
    """The function ``FUNCTIONS`` or ``OPTIONAL_FUNCTIONS`` lists as ``name`` (None if none)."""
    if not isinstance(name, str):
        return None
    if name in OPTIONAL_FUNCTIONS and name not in FUNCTIONS:
        module, attr = OPTIONAL_FUNCTIONS[name]
        FUNCTIONS[name] = getattr(importlib.import_module(module), attr)
        _FUNCTION_NAMES[id(FUNCTIONS[name])] = name
    return FUNCTIONS.get(name)


def function_name(fn) -> str:
    """The name ``FUNCTIONS`` knows ``fn`` by (ValueError if it is not listed)."""
    for name, (module, attr) in OPTIONAL_FUNCTIONS.items():
        if getattr(sys.modules.get(module), attr, None) is fn:
            function(name)
    name = _FUNCTION_NAMES.get(id(fn))
    check(name is not None, f"save_sparse: cannot save a call to {getattr(fn, '__module__', '')}.{getattr(fn, '__name__', fn)} "
                            "(not in nptm.sparse.program.FUNCTIONS)")
    return name


class Ref(NamedTuple):
    """The value of an earlier step."""
    index: int


def encode(v, names: dict[fx.Node, str]):
    """An fx argument as plain data (weights_only-loadable): nodes by name, tuples/dicts/slices/dtypes tagged."""
    if isinstance(v, fx.Node):
        return {"node": names[v]}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        items = [encode(x, names) for x in v]
        return items if type(v) is list else {"tuple": items}
    if isinstance(v, dict):
        return {"dict": [[k, encode(x, names)] for k, x in v.items()]}
    if isinstance(v, slice):
        return {"slice": [encode(v.start, names), encode(v.stop, names), encode(v.step, names)]}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if v is Ellipsis:
        return {"ellipsis": True}
    raise ValueError(f"save_sparse: cannot save an argument of type {type(v).__name__}")


def decode(v, steps: dict[str, int], depth: int = 0):
    """Plain data back to an argument, references to earlier steps as ``Ref`` (ValueError on anything else)."""
    check(depth <= MAX_DEPTH, "arguments nested too deeply")
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        check(len(v) <= MAX_STR, "a string argument is too long")
        return v
    if isinstance(v, list):
        check(len(v) <= MAX_ITEMS, "an argument list is too long")
        return [decode(x, steps, depth + 1) for x in v]
    check(isinstance(v, dict) and len(v) == 1, f"an argument of type {type(v).__name__} is not plain data")
    (kind, x), = v.items()
    if kind == "node":
        check(x in steps, f"argument {str(x)[:40]!r} names no earlier step")
        return Ref(steps[x])
    if kind == "tuple":
        check(isinstance(x, list), "bad tuple")
        return tuple(decode(x, steps, depth))
    if kind == "dict":
        check(isinstance(x, list) and len(x) <= MAX_ITEMS
              and all(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str) for kv in x), "bad dict")
        return {k: decode(i, steps, depth + 1) for k, i in x}
    if kind == "slice":
        check(isinstance(x, list) and len(x) == 3, "bad slice")
        return slice(*(decode(i, steps, depth + 1) for i in x))
    if kind in ("dtype", "memory_format"):
        found = (_DTYPES if kind == "dtype" else _FORMATS).get(x) if isinstance(x, str) else None
        check(found is not None, f"unknown {kind} {str(x)[:40]!r}")
        return found
    if kind == "device":
        check(isinstance(x, str) and _DEVICE.fullmatch(x) is not None, f"unknown device {str(x)[:40]!r}")
        return torch.device(x)
    check(kind == "ellipsis" and x is True, f"unknown argument kind {str(kind)[:40]!r}")
    return Ellipsis


def _fill(v, env: list):
    if isinstance(v, Ref):
        return env[v.index]
    if isinstance(v, (list, tuple)):
        filled = [_fill(x, env) for x in v]
        return filled if isinstance(v, list) else tuple(filled)
    if isinstance(v, dict):
        return {k: _fill(x, env) for k, x in v.items()}
    if isinstance(v, slice):
        return slice(_fill(v.start, env), _fill(v.stop, env), _fill(v.step, env))
    return v


def _refs(v) -> list[int]:
    if isinstance(v, Ref):
        return [v.index]
    if isinstance(v, (list, tuple)):
        return [i for x in v for i in _refs(x)]
    if isinstance(v, dict):
        return [i for x in v.values() for i in _refs(x)]
    if isinstance(v, slice):
        return _refs([v.start, v.stop, v.step])
    return []


class Step(NamedTuple):
    op: str
    name: str
    target: str
    call: Any  # the function / unbound tensor method; None for the other ops
    args: tuple
    kwargs: dict


def tensor_owner(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The module holding the parameter or buffer at ``path`` and its name there (ValueError if none)."""
    parent, _, leaf = path.rpartition(".")
    try:
        owner = root.get_submodule(parent)
    except AttributeError:
        owner = None
    check(owner is not None and isinstance(owner._parameters.get(leaf, owner._buffers.get(leaf)), Tensor),
          f"attribute {path!r} is no tensor of the model")
    return owner, leaf


class SparseProgram(nn.Module):
    """Runs a validated list of steps over its own modules and tensors (what ``load_sparse`` returns).

    ``records`` are the steps as plain data (``save_sparse`` writes them again); ``callable_modules`` are
    the paths ``call_module`` may name; ``get_attr`` may not read the tensors of ``protected`` module classes
    (the sparse layers' compressed buffers, checked once at load, stay out of the program's reach)."""

    def __init__(self, records: list, callable_modules: set[str], protected: tuple[type, ...] = ()):
        super().__init__()
        self._records, self._callable, self._protected = records, frozenset(callable_modules), protected

    def compile(self) -> None:
        """Validate every step (call after the modules and tensors are in place); ValueError on the first bad one."""
        records = self._records
        check(isinstance(records, list) and 0 < len(records) <= MAX_STEPS, "the program is not a list of steps")
        steps, index = [], {}
        for i, rec in enumerate(records):
            check(isinstance(rec, dict) and set(rec) == {"op", "name", "target", "args", "kwargs"}, f"step {i} is not a step record")
            op, name, target = rec["op"], rec["name"], rec["target"]
            check(op in _OPS, f"step {i}: unknown op {str(op)[:40]!r}")
            check(is_identifier(name) and name not in index, f"step {i}: bad or repeated name {str(name)[:60]!r}")
            args, kwargs = decode(rec["args"], index), decode(rec["kwargs"], index)
            check(isinstance(args, list) and isinstance(kwargs, dict), f"step {name}: args must be a list, kwargs a dict")
            check(all(is_identifier(k) and k != "out" for k in kwargs), f"step {name}: bad keyword argument")
            steps.append(Step(op, name, target, self._resolve(op, name, target, args, kwargs), tuple(args), kwargs))
            index[name] = i
        check(steps[-1].op == "output" and [s.op for s in steps].count("output") == 1 and len(steps[-1].args) == 1,
              "the program must end with its one output step")
        last = {}
        for i, s in enumerate(steps):
            for j in _refs((s.args, s.kwargs)):
                last[j] = i
        frees: list[list[int]] = [[] for _ in steps]
        for j, i in last.items():
            frees[i].append(j)
        self._steps, self._frees = steps, frees
        self._inputs = {i: k for k, i in enumerate(i for i, s in enumerate(steps) if s.op == "placeholder")}

    def _resolve(self, op: str, name: str, target, args: list, kwargs: dict):
        if op == "placeholder":
            check(is_identifier(target) and len(args) <= 1 and not kwargs and not _refs(args), f"step {name}: bad input")
        elif op == "get_attr":
            check(is_path(target) and not args and not kwargs, f"step {name}: bad attribute {str(target)[:80]!r}")
            owner, _ = tensor_owner(self, target)
            check(not isinstance(owner, self._protected), f"step {name}: the program may not read {target!r}")
        elif op == "call_module":
            check(is_path(target) and target in self._callable, f"step {name}: no module {str(target)[:80]!r} to call")
        elif op == "call_method":
            check(isinstance(target, str) and target in METHODS and len(args) >= 1,
                  f"step {name}: tensor method {str(target)[:80]!r} is not allowed")
            return getattr(Tensor, target)
        elif op == "call_function":
            check(function(target) is not None, f"step {name}: function {str(target)[:80]!r} is not allowed")
            if target == "builtins:getattr":
                check(len(args) == 2 and isinstance(args[0], Ref) and args[1] in TENSOR_ATTRIBUTES and not kwargs,
                      f"step {name}: getattr of {str(args[1:])[:80]} is not allowed")
            return FUNCTIONS[target]
        else:
            check(target == "output", f"step {name}: bad output")
        return None

    def forward(self, *inputs, **named):
        env: list = [None] * len(self._steps)
        for i, s in enumerate(self._steps):
            if s.op == "placeholder":
                k = self._inputs[i]
                if k < len(inputs):
                    env[i] = inputs[k]
                elif s.target in named:
                    env[i] = named[s.target]
                elif s.args:
                    env[i] = s.args[0]
                else:
                    raise TypeError(f"missing input {s.target!r}")
                continue
            args, kwargs = _fill(s.args, env), _fill(s.kwargs, env)
            if s.op == "call_module":
                env[i] = self.get_submodule(s.target)(*args, **kwargs)
            elif s.op == "call_function":
                if s.call is builtins.getattr and not isinstance(args[0], Tensor):
                    raise TypeError(f"{s.name}: getattr of a {type(args[0]).__name__}, not a tensor")
                env[i] = s.call(*args, **kwargs)
            elif s.op == "call_method":
                if not isinstance(args[0], Tensor):
                    raise TypeError(f"{s.name}: tensor method {s.target} called on a {type(args[0]).__name__}")
                env[i] = s.call(*args, **kwargs)
            elif s.op == "get_attr":
                owner, leaf = tensor_owner(self, s.target)
                env[i] = getattr(owner, leaf)
            else:
                return args[0]
            for j in self._frees[i]:
                env[j] = None
        raise RuntimeError("the program has no output")

    def extra_repr(self) -> str:
        return f"{len(self._steps)} steps"

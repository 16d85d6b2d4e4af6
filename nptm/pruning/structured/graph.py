"""Model -> channel groups: trace with torch.fx, run the example input through the trace for shapes, and
propagate channel labels node by node. Convs/linears start new groups; adds/muls couple groups; concats
and chunks map offsets; grouped convs add block constraints. Channels that reach the model's output or
pass through an op whose channel semantics are unknown are *fixed* (kept whole, with the reason); a
reshape that moves channels into the batch dimension is refused.
"""
from __future__ import annotations

import contextlib
import fnmatch
import io
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from nptm.pruning.structured.labels import Label, UnionFind
from nptm.pruning.structured.shape_ops import ShapeOps, UnsupportedModel, flatten_range, tensor_shape

CLASSIFIER = "<classifier>"  # the layer(s) producing the model's output: always kept whole

_ACTIVATIONS = tuple(
    c for c in vars(nn.modules.activation).values()
    if isinstance(c, type) and issubclass(c, nn.Module) and c not in (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d,
                                                                      nn.MultiheadAttention, nn.PReLU, nn.Module)
)
PASS_MODULES = _ACTIVATIONS + (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample,
)
PASS_OPS = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "sigmoid_", "hardswish", "hardsigmoid", "hardtanh", "tanh", "elu",
    "leaky_relu", "selu", "mish", "softplus", "dropout", "dropout2d", "alpha_dropout", "clone", "contiguous", "detach", "to",
    "float", "double", "half", "neg", "abs", "exp", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool2d", "interpolate",
    "stochastic_depth", "relu6_", "hardswish_", "silu_",
}
BINARY_OPS = {"add", "sub", "mul", "truediv", "div", "iadd", "isub", "imul", "itruediv", "add_", "mul_", "sub_", "div_",
              "maximum", "minimum"}
REDUCE_OPS = {"mean", "sum", "amax", "amin"}


@dataclass(frozen=True)
class TensorSlice:
    """Dimension ``dim`` of parameter/buffer ``tensor`` holds the channels of ``label``; ``conv_groups`` > 1:
    a grouped conv's weight dim 1 (each output block sees only its own input block)."""

    tensor: str
    dim: int
    label: Label
    conv_groups: int = 1


@dataclass
class ChannelGroup:
    """Coupled channels: pruning channel j removes slice j of every member.

    ``name``: the first producing layer (the key of ``shrink``'s ``keep``); ``producers``: layers whose
    output channels these are (their weights are scored); ``members``: (tensor, dim) sliced; ``blocks``:
    channels are kept evenly across this many equal blocks (grouped convs); ``reason``: why the group is
    kept whole (None: prunable).
    """

    name: str
    size: int
    producers: tuple[str, ...]
    members: tuple[tuple[str, int], ...]
    blocks: int = 1
    reason: str | None = None
    id: int = field(default=-1, repr=False)

    @property
    def prunable(self) -> bool:
        return self.reason is None


@dataclass
class ChannelGraph:
    groups: list[ChannelGroup]
    slices: list[TensorSlice]
    producers: list[tuple[str, Label]]  # layer name -> label of its weight's dim 0
    uf: UnionFind


def producer_channel_dim(module: nn.Module, out_ndim: int) -> int:
    """The dimension of a producing layer's output that holds its channels: dim 1 of a conv's, the last of a
    linear's (channels-last MLPs, sequences)."""
    return out_ndim - 1 if isinstance(module, nn.Linear) else 1


def op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return node.target
    return getattr(node.target, "__name__", str(node.target))


def _where(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    owner = list(stack)[-1] if stack else ""
    return f"{owner or 'forward'} ({node.name})"


class _Propagator(ShapeOps):
    def __init__(self, model: nn.Module, gm: fx.GraphModule):
        self.model, self.gm = model, gm
        self.modules = dict(model.named_modules())
        self.canon = canonical_names(model)
        self.tensors = set(self.canon.values())
        self.uf = UnionFind()
        self.labels: dict[fx.Node, object] = {}
        self.slices: dict[tuple[str, int], TensorSlice] = {}
        self.producers: dict[str, Label] = {}
        self.module_io: dict[str, tuple[Label | None, object]] = {}  # shared layers: first call's (input, output)
        self.unsliced: set[tuple[str, int]] = set()

    # -- helpers
    def label(self, a) -> Label | None:
        lab = self.labels.get(a) if isinstance(a, fx.Node) else None
        return lab if isinstance(lab, Label) else None

    def tracked(self, args) -> list[Label]:
        out = []
        for a in _flat(args):
            lab = self.labels.get(a) if isinstance(a, fx.Node) else None
            if isinstance(lab, Label):
                out.append(lab)
            elif isinstance(lab, tuple):
                out += [x for x in lab if isinstance(x, Label)]
        return out

    def fix_all(self, args, reason: str) -> None:
        for lab in self.tracked(args):
            self.uf.fix_label(lab, reason)

    def add_slice(self, tensor: str, dim: int, label: Label | None, conv_groups: int = 1) -> None:
        """Dimension ``dim`` of ``tensor`` holds ``label``'s channels (None: channels that are not pruned);
        a tensor shared by layers (tied weights) couples them."""
        tensor = self.canon.get(tensor, tensor)
        key = (tensor, dim)
        old = self.slices.get(key)
        if label is None or key in self.unsliced:
            self.unsliced.add(key)
            self.uf.fix_label(old.label if old else label, f"{tensor} is shared with a layer whose channels are not pruned")
        elif old is None:
            self.slices[key] = TensorSlice(tensor, dim, label, conv_groups)
        else:
            reason = f"{tensor} is used with different channels"
            if old.conv_groups != conv_groups or self.uf.unify(old.label, label, reason) is None:
                self.uf.fix_label(old.label, reason)

    def fresh(self, size: int, dim: int, blocks: int = 1) -> Label:
        return Label(dim, ((self.uf.new(size, blocks), 0, size),))

    # -- node rules
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                self.labels[node] = None
            elif node.op == "output":
                self.fix_all(node.args, "feeds the model's output")
            else:
                self.labels[node] = self.visit(node)

    def visit(self, node: fx.Node):
        name = op_name(node, self.modules)
        x = self.label(node.args[0]) if node.args else None
        out = tensor_shape(node)
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target], x)
        if "tensor_meta" not in node.meta and name not in ("chunk", "split", "split_with_sizes", "tensor_split"):
            return None  # sizes and other non-tensor values
        if not self.tracked(list(node.args) + list(node.kwargs.values())):
            return self.untracked_split(node) if name in ("chunk", "split", "split_with_sizes") else None
        where = f"{name} at {_where(node)}"
        if not node.args or self.tracked(node.kwargs):  # tensors passed by keyword: not followed
            self.fix_all((node.args, node.kwargs), f"passes through {where}")
            return None
        if name in BINARY_OPS:
            return self.elementwise(node, where)
        if name == "cat" or name == "concat":
            return self.cat(node, where)
        if name in ("chunk", "split", "split_with_sizes", "tensor_split") and x is not None:
            return self.split(node, x, name, where)
        if name == "getitem" and isinstance(self.labels.get(node.args[0]), tuple):
            return self.labels[node.args[0]][node.args[1]]
        if x is None:  # tracked channels only in later arguments
            self.fix_all(node.args, f"passes through {where}")
            return None
        in_shape = tensor_shape(node.args[0])
        if name == "getitem":
            return self.getitem(node, x, in_shape, where)
        if name in ("view", "reshape"):
            return self.reshape(node, x, in_shape, out, where)
        if name == "flatten":
            return self.flatten(x, in_shape, *flatten_range(node, len(in_shape)), where)
        if name in ("permute", "transpose"):
            return self.permute(node, x, len(in_shape), name, where)
        if name in REDUCE_OPS:
            return self.reduce(node, x, len(in_shape), where)
        if name == "pad":
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            touched = len(in_shape) - 1 - x.dim < len(pad) // 2
            if touched and any(pad[2 * (len(in_shape) - 1 - x.dim) : 2 * (len(in_shape) - x.dim)]):
                self.uf.fix_label(x, f"padded along channels by {where}")
                return None
            return self.passthrough(x, in_shape, out, where)
        if name == "layer_norm":
            return self.layer_norm(node, x, in_shape, where)
        if name in PASS_OPS:
            return self.passthrough(x, in_shape, out, where)
        self.fix_all(node.args, f"passes through {where}")
        return None

    def passthrough(self, x: Label, in_shape, out, where: str) -> Label | None:
        if out is not None and len(out) == len(in_shape) and out[x.dim] == in_shape[x.dim]:
            return x
        self.uf.fix_label(x, f"changes channels in {where}")
        return None

    def visit_module(self, node: fx.Node, m: nn.Module, x: Label | None):
        name, in_shape, out = node.target, tensor_shape(node.args[0]) if node.args else None, tensor_shape(node)
        stateful = next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None
        if stateful and name in self.module_io:  # a shared layer: same output channels, inputs coupled
            first_in, first_out = self.module_io[name]
            if first_in is not None and x is not None:
                self.uf.unify(first_in, x, f"{name} is shared between inputs that do not align")
            elif first_in is not None or x is not None:
                self.uf.fix_label(first_in or x, f"{name} is shared with an untracked input")
            return first_out
        result = self.visit_new_module(node, name, m, x, in_shape, out)
        self.module_io[name] = (x, result)
        return result

    def visit_new_module(self, node, name: str, m: nn.Module, x: Label | None, in_shape, out):
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            if x is not None and x.dim != 1:
                self.uf.fix_label(x, f"reaches {name} off the channel dimension")
                x = None
            g = m.groups
            if g > 1 and g == m.in_channels == m.out_channels:  # depthwise: output channel c follows input c
                y = x if x is not None else self.fresh(m.out_channels, 1)
                if x is None:
                    self.uf.fix(y.segs[0][0], f"depthwise {name} has an input that is not pruned")
            else:
                if x is not None:
                    if g > 1:
                        if len(x.segs) == 1 and x.segs[0][2] == self.uf.sizes[x.segs[0][0]]:
                            self.uf.add_blocks(x.segs[0][0], g)
                        else:
                            self.uf.fix_label(x, f"grouped {name} sees concatenated channels")
                self.add_slice(f"{name}.weight", 1, x, g)
                y = self.fresh(m.out_channels, producer_channel_dim(m, len(out)), g)
            self.producers[name] = y
            self.add_slice(f"{name}.weight", 0, y)
            if m.bias is not None:
                self.add_slice(f"{name}.bias", 0, y)
            return y
        if isinstance(m, nn.Linear):
            last = len(in_shape) - 1
            if x is not None and x.dim != last:
                return x  # applied along another dimension: channels pass through
            self.add_slice(f"{name}.weight", 1, x)
            y = self.fresh(m.out_features, producer_channel_dim(m, len(out)))
            self.producers[name] = y
            self.add_slice(f"{name}.weight", 0, y)
            if m.bias is not None:
                self.add_slice(f"{name}.bias", 0, y)
            return y
        if x is None:
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and x.dim == 1 and x.inner == 1:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, attr, None) is not None:
                    self.add_slice(f"{name}.{attr}", 0, x)
            return x
        if isinstance(m, nn.LayerNorm):
            return self.layer_norm(node, x, in_shape, name, module=m)
        if isinstance(m, nn.PReLU) and x.dim == 1:
            if m.num_parameters > 1:
                self.add_slice(f"{name}.weight", 0, x)
            return x
        if isinstance(m, nn.Flatten):
            return self.flatten(x, in_shape, m.start_dim % len(in_shape), m.end_dim % len(in_shape), name)
        if isinstance(m, PASS_MODULES):
            return self.passthrough(x, in_shape, out, name)
        self.uf.fix_label(x, f"passes through {type(m).__name__} {name}")
        return None

    def elementwise(self, node: fx.Node, where: str) -> Label | None:
        out = tensor_shape(node)
        operands = [a for a in node.args if isinstance(a, fx.Node)]
        labs = [(a, self.label(a)) for a in operands]
        tracked = [(a, lab) for a, lab in labs if lab is not None]
        pos = {lab.dim + len(out) - len(tensor_shape(a)) for a, lab in tracked}
        if len(pos) != 1:
            self.fix_all(node.args, f"combined along different dimensions in {where}")
            return None
        pos = pos.pop()
        y = tracked[0][1]
        for _, lab in tracked[1:]:
            y = y and self.uf.unify(y, lab, f"combined in {where}")
        if y is None:
            return None
        for a, lab in labs:
            shape = tensor_shape(a)
            if lab is not None or shape is None:
                continue
            j = pos - (len(out) - len(shape))
            if j < 0 or shape[j] == 1:
                continue
            if a.op == "get_attr" and self.canon.get(a.target, a.target) in self.tensors and y.inner == 1:
                self.add_slice(a.target, j, y.moved(j))
            else:
                self.uf.fix_label(y, f"combined with an unpruned tensor in {where}")
                return None
        return y.moved(pos)


def canonical_names(model: nn.Module) -> dict[str, str]:
    """Every parameter/buffer name (tied ones included) -> the first name of the same tensor."""
    first, out = {}, {}
    for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        out[n] = first.setdefault(id(t), n)
    return out


def _flat(args):
    out = []
    fx.node.map_aggregate(args, lambda a: out.append(a))
    return out


def default_input(model: nn.Module) -> torch.Tensor:
    """One 32x32 sample with the first conv's input channels (or the first linear's features)."""
    p = next(model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return torch.zeros(1, m.in_channels, *(32,) * (m.weight.dim() - 2), device=p.device, dtype=p.dtype)
        if isinstance(m, nn.Linear):
            return torch.zeros(1, m.in_features, device=p.device, dtype=p.dtype)
    raise ValueError(f"{type(model).__name__} has no conv or linear layer to prune")


def trace_channels(model: nn.Module, example_input: torch.Tensor | None = None, *, ignore=()) -> ChannelGraph:
    """Trace ``model`` into channel groups: the graph in training mode (so training-only branches such as
    auxiliary heads are coupled too), shapes from ``example_input`` in eval mode without grad. The model's
    training flags are restored."""
    x = default_input(model) if example_input is None else example_input
    flags = {m: m.training for m in model.modules()}
    try:
        try:
            gm = fx.GraphModule(model, fx.Tracer().trace(model.train()))
        except Exception as e:  # noqa: BLE001  (fx raises many types)
            raise UnsupportedModel(f"cannot trace {type(model).__name__} with torch.fx: {str(e).splitlines()[0]}") from None
        model.eval()
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints a traceback itself
            ShapeProp(gm).propagate(x)
    except RuntimeError as e:  # the traced graph (training-only branches included) does not run on x
        cause = str(e.__cause__ or e).strip().splitlines() or [type(e.__cause__ or e).__name__]
        raise ValueError(f"example input {tuple(x.shape)} does not run through {type(model).__name__}'s traced graph: "
                         f"{cause[0]}") from None
    finally:
        for m, f in flags.items():
            m.training = f
    prop = _Propagator(model, gm)
    prop.run()
    uf = prop.uf
    patterns = [p for p in ignore if p != CLASSIFIER]
    for name, lab in prop.producers.items():
        if any(fnmatch.fnmatchcase(name, p) or name == p or name.startswith(p + ".") for p in patterns):
            uf.fix_label(lab, f"{name} is ignored")
    return ChannelGraph(_groups(prop), list(prop.slices.values()), list(prop.producers.items()), uf)


def _groups(prop: _Propagator) -> list[ChannelGroup]:
    uf, by_root = prop.uf, {}
    for name, lab in prop.producers.items():
        for gid, _, _ in lab.segs:
            by_root.setdefault(uf.find(gid), []).append(name)
    members: dict[int, list] = {}
    for s in prop.slices.values():
        for gid, _, _ in s.label.segs:
            members.setdefault(uf.find(gid), []).append((s.tensor, s.dim))
    return [
        ChannelGroup(names[0], uf.sizes[root], tuple(dict.fromkeys(names)), tuple(dict.fromkeys(members.get(root, ()))),
                     uf.blocks[root], uf.fixed.get(root), root)
        for root, names in by_root.items()
    ]

"""HRank (Lin et al., CVPR 2020): the score of an output channel is the matrix rank of its feature map, averaged
over the calibration images; ranks in float64. Runs in eval mode without gradients.

Where the map is taken (``point``):

- ``"activation"`` (``hrank``, the default): the output of the activation that follows the producing layer,
  through normalisation, dropout/identity layers and residual adds, as the authors' code ranks it
  (lmbxmu/HRank and HRankPlus ``rank_generation.py`` hook each block's ``relu1``/``relu2``: after BN, and for a
  ResNet block's second conv after the residual add). A producer that no activation follows this way (its output
  branches first, or another op comes first) is ranked at its own output.
- ``"output"`` (``hrank_output``): the producing layer's own output, before BN and the activation.

The channel dimension is the one the channel graph gives the producer (``producer_channel_dim``: dim 1 of a
conv's output, the last dim of a linear's), so channels-last linears (ConvNeXt's MLP) and linears on sequences
are ranked per channel. A channel's map is the matrix of the remaining non-batch dims: H x W; 1 x L for one dim
(Conv1d, a linear on [N, L, F]); 1 x 1 for none (a linear on [N, F]: rank 1 where the output is non-zero);
D x (H*W...) for more. The model is traced in eval mode (producers only its training-only branches call score 0);
models that torch.fx cannot trace, and a bare layer passed as the model, are ranked at the producers' outputs
through forward hooks.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from nptm.pruning.criteria.base import CRITERIA, Criterion, check_finite, eval_mode, owner_modules, require_batches
from nptm.pruning.structured.graph import _ACTIVATIONS, op_name, producer_channel_dim
from nptm.pruning.structured.shape_ops import tensor_shape

POINTS = ("activation", "output")
_THROUGH_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm,
                    nn.Identity, nn.modules.dropout._DropoutNd)
_THROUGH_OPS = {"add", "add_", "iadd", "dropout", "dropout1d", "dropout2d", "dropout3d", "clone", "contiguous"}
_ACTIVATION_OPS = {"relu", "relu_", "relu6", "relu6_", "gelu", "silu", "silu_", "hardswish", "hardswish_", "sigmoid",
                   "sigmoid_", "tanh", "elu", "elu_", "leaky_relu", "leaky_relu_", "selu", "mish", "softplus",
                   "hardtanh"}


def channel_ranks(out: Tensor, channel_dim: int) -> Tensor:
    """float64 sum over the batch of the rank of each channel's map, shape [channels]."""
    maps = out.detach().double().movedim(channel_dim, 1)
    if maps.dim() <= 3:  # no or one map dimension: a 1 x 1 or 1 x L matrix
        maps = maps.reshape(maps.shape[0], maps.shape[1], 1, -1)
    elif maps.dim() > 4:
        maps = maps.flatten(3)
    return torch.linalg.matrix_rank(maps).double().sum(0)


def _step(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'activation', 'through' (keeps the channels and shape) or None for a node after a producer's output."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (*_ACTIVATIONS, nn.PReLU)) and not isinstance(m, nn.GLU):
            return "activation"
        return "through" if isinstance(m, _THROUGH_MODULES) else None
    name = op_name(node, modules)
    return "activation" if name in _ACTIVATION_OPS else "through" if name in _THROUGH_OPS else None


def probe_node(producer: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The activation that follows ``producer`` along single-use, channel- and shape-keeping nodes, else
    ``producer`` itself."""
    node, shape = producer, tensor_shape(producer)
    while len(node.users) == 1:
        node = next(iter(node.users))
        step = _step(node, modules)
        if step is None or tensor_shape(node) != shape:
            break
        if step == "activation":
            return node
    return producer


class _Recorder(fx.Interpreter):
    """Runs a traced graph and hands each probed node's value to ``record(node, value)`` as it is computed."""

    def __init__(self, gm: fx.GraphModule, record: Callable[[fx.Node, Tensor], None], probes):
        super().__init__(gm)
        self.record, self.probes = record, probes

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.probes:
            self.record(n, out)
        return out


def _trace(model: nn.Module, x: Tensor, owners: dict[str, str]):
    """(eval-mode trace, layer name -> its call nodes), or None when fx cannot trace the model or no producer is a
    call in the trace. Producers the eval-mode graph never calls (training-only branches) score 0."""
    try:
        gm = fx.GraphModule(model, fx.Tracer().trace(model))
        ShapeProp(gm).propagate(x)
    except Exception:  # noqa: BLE001  (fx raises many types): ranked through hooks
        return None
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    if not any(owner in calls for owner in owners.values()):
        return None  # the model is the producer itself (a bare layer)
    return gm, calls


class HRank(Criterion):
    structured = True
    needs_data = True
    point = "activation"

    def __init__(self, point: str | None = None):
        if point is not None:
            if point not in POINTS:
                raise ValueError(f"HRank point must be one of {', '.join(POINTS)}, got {point!r}")
            self.point = point

    @torch.no_grad()
    def scores(self, model, params, *, loader=None, generator=None):
        check_finite(params)
        totals = {n: torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) for n, w in params.items()}
        images = 0
        with eval_mode(model):
            batches = require_batches(loader, self)
            first, _ = next(batches)
            run, close = self._runner(model, params, first, totals)
            try:
                for x in itertools.chain([first], (x for x, _ in batches)):
                    run(x)
                    images += len(x)
            finally:
                close()
        return {n: t / images for n, t in totals.items()}

    def _runner(self, model: nn.Module, params, x: Tensor, totals: dict[str, Tensor]):
        """(run(x), close()): the traced graph recording the probes, or the model with forward hooks."""
        modules = dict(model.named_modules())
        owners = {n: n.rpartition(".")[0] for n in params}
        traced = _trace(model, x[:1], owners)
        if traced is None:
            def hook(name):
                def add(module, inputs, out):
                    totals[name] += channel_ranks(out, producer_channel_dim(module, out.dim()))
                return add

            handles = [m.register_forward_hook(hook(n)) for n, m in owner_modules(model, params).items()]
            return model, lambda: [h.remove() for h in handles]
        gm, calls = traced
        probes: dict[fx.Node, list[tuple[str, int]]] = {}
        for name, owner in owners.items():
            for call in calls.get(owner, ()):
                probe = probe_node(call, modules) if self.point == "activation" else call
                dim = producer_channel_dim(modules[owner], len(tensor_shape(call)))
                probes.setdefault(probe, []).append((name, dim))

        def record(node, out):
            for name, dim in probes[node]:
                totals[name] += channel_ranks(out, dim)

        return _Recorder(gm, record, probes).run, lambda: None


CRITERIA.register("hrank", HRank, position=6)


@CRITERIA.register("hrank_output", position=6.5)
class HRankOutput(HRank):
    """HRank at the producing layer's own output (before BN and the activation)."""

    point = "output"

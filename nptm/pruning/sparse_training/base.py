"""Pruning-stable methods: sparsify while the network trains from its init, within the same budget T as the dense
training, with no retraining after (the 2023 paper's Table 2). One file per method, registered in
``SPARSE_TRAINING``; the study runs every method through this contract::

    method = SPARSE_TRAINING[name](**options)   # a dataclass: its fields are the method's options (``options()``)
    method.prepare(model, sparsity=s, total_iters=T * ipe, iters_per_epoch=ipe, include_linear=...)
    optimizer = build_optimizer(..., method.param_groups(model, weight_decay), ...)  # AFTER prepare
    trainer = Trainer(model, ..., callbacks=[method, ...])  # the method is a callback (duck-typed hooks)
    trainer.load_state_dict(checkpoint)          # resuming: after prepare and the optimizer, as for any run
    trainer.fit()                                # T epochs of the study's schedule, weight decay, momentum
    done = method.finish(model)                  # plain weights, exactly round(s * N) of them pruned

- ``prepare`` changes the model before the optimizer exists: weights reparametrized through
  ``torch.nn.utils.parametrize`` (their trainable tensor is then ``<layer>.parametrizations.weight.original``, and
  ``prunable_weights`` does not see them until ``finish``), extra learned parameters registered inside the model
  (STR's thresholds, CS's mask scores) so ``model.parameters()`` holds them, extra buffers (masks, LC's targets).
- ``param_groups(model, weight_decay)`` gives the optimizer's groups: the extra learned parameters with the
  decay the method wants (STR: decayed, that is what drives its sparsity; CS: not decayed), all others
  ``weight_decay``.
- As a callback it gets ``trainer`` (``.model``, ``.optimizer``, ``.iteration`` = optimizer steps taken,
  ``.epoch``, ``.epochs``, ``.iters_per_epoch``); methods that change gradients register an optimizer step
  pre-hook in ``on_fit_start`` (after DDP's all-reduce and GradScaler's unscale, skipped with the step) and
  remove it in ``on_fit_end``.
- All state lives in the model's parameters and buffers (so ``model.state_dict()`` in the trainer's epoch
  checkpoint resumes it exactly) or is a function of ``trainer.iteration`` / ``trainer.epoch``; the method object
  holds only its options and what ``prepare`` was told.
- ``finish(model)`` first measures what the method reached: the zeros of the weights its forward pass uses
  (DPF, DNW: w * m; STR: the soft-thresholded weights; GSM, LC: the dense weights, which have no exact zeros;
  CS: its own final mask s > 0, since sigmoid never reaches 0). Then it removes the reparametrization and the
  buffers, leaves the weights the method ends with, projects them onto exactly round(s * N) pruned weights by
  one global magnitude top-k (``finish(model, pattern="4x1")``: onto round(s * blocks)
  pruned Kx1 blocks, ``nptm.pruning.patterns``), and returns ``Finished``: the masks (bound to the model, weights already masked),
  the reached sparsity, the final sparsity and ``projection_change``, ||w_forward - w_final||^2 / ||w_forward||^2,
  the share of the forward weights' squared norm that the end (the method's last step and the projection)
  removed: near 0 for a method that sparsified during training, large for one that trained densely. If a
  method over-shoots, the masks keep some zero weights.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from nptm import ops
from nptm.pruning.masks import Masks, prunable_weights, unwrap
from nptm.pruning.patterns import Blocks, as_pattern, layer_groups
from nptm.utils.registry import Registry


class Finished(NamedTuple):
    masks: Masks
    reached_sparsity: float  # zeros of the weights the forward used, before the end step and the projection
    sparsity: float  # after the projection (round(s * N) / N, or more if the method over-shot)
    projection_change: float  # ||w_forward - w_final||^2 / ||w_forward||^2


@dataclasses.dataclass
class SparseTraining:
    """Base of the methods; subclasses are dataclasses whose fields are their options (with defaults)."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    reaches_sparsity: ClassVar[bool] = False  # True: the sparsity is reached (STR, CS), not set by a top-k

    @classmethod
    def options(cls) -> tuple[dataclasses.Field, ...]:
        """The option fields (name, type, default; ``metadata["help"]``) a CLI can offer."""
        return dataclasses.fields(cls)

    # -- the contract
    def prepare(self, model: nn.Module, *, sparsity: float, total_iters: int, iters_per_epoch: int,
                include_linear: bool = False) -> None:
        """Make ``model`` train with this method (before the optimizer is built). ValueError for bad arguments."""
        if not 0 <= sparsity < 1:
            raise ValueError(f"{self.name}: the sparsity must be in [0, 1), got {sparsity}")
        if total_iters < 1 or iters_per_epoch < 1:
            raise ValueError(f"{self.name}: needs total_iters >= 1 and iters_per_epoch >= 1, got {total_iters}, "
                             f"{iters_per_epoch}")
        model = unwrap(model)
        names = tuple(prunable_weights(model, include_linear))
        if not names:
            raise ValueError(f"{self.name}: {type(model).__name__} has no prunable weights")
        self.sparsity, self.total_iters, self.iters_per_epoch = sparsity, total_iters, iters_per_epoch
        self.include_linear, self.names = include_linear, names
        self.numel = sum(model.get_parameter(n).numel() for n in names)
        self.pruned = round(sparsity * self.numel)  # k: the weights pruned at the end, exactly
        self._hooks: list = []
        self._setup(model)

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups: the method's extra parameters with their decay, the rest decayed."""
        extra = {id(p) for p in self._extra_parameters(unwrap(model))}
        params = list(unwrap(model).parameters())
        rest = [p for p in params if id(p) not in extra]
        groups = [{"params": rest, "weight_decay": weight_decay}]
        if extra:
            groups.append({"params": [p for p in params if id(p) in extra],
                           "weight_decay": self._extra_decay(weight_decay)})
        return groups

    @torch.no_grad()
    def finish(self, model: nn.Module, pattern: str | None = None) -> Finished:
        """Plain weights projected onto exactly the target sparsity, with what the method reached before that.
        ``pattern`` "Kx1": the projection prunes round(s * blocks) whole blocks (``nptm.pruning.patterns``)."""
        model = unwrap(model)
        used = [w.detach().clone() for w in self.forward_weights(model)]
        reached = zero_fraction(self._own_weights(model, used))
        self._finalize(model)
        params = prunable_weights(model, self.include_linear)
        weights = list(params.values())
        pat = as_pattern(pattern)
        if not isinstance(pat, Blocks):
            raise ValueError(f"{self.name}: the projection prunes single weights or Kx1 blocks, not {pat.name!r}")
        kept = magnitude_masks(weights, self.pruned) if pat.k == 1 else pat.masks(
            weights, self.sparsity, scores=None, old=[torch.ones_like(w, dtype=torch.bool) for w in weights],
            groups=layer_groups(model, list(params)))
        masks = Masks(dict(zip(params, kept))).bind(model)
        masks.apply(model)
        change = sum(float((u - w).float().square().sum()) for u, w in zip(used, weights))
        norm = sum(float(u.float().square().sum()) for u in used)
        return Finished(masks, reached, zero_fraction(weights), change / norm if norm else 0.0)

    def forward_weights(self, model: nn.Module) -> list[Tensor]:
        """The prunable weights as the forward pass computes with them (through the parametrizations)."""
        return [getattr(*owner(model, n)) for n in self.names]

    # -- trainer callbacks (duck typed)
    def on_fit_start(self, trainer) -> None:
        if type(self).before_step is not SparseTraining.before_step:
            hook = trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_step(trainer))
            self._hooks.append(hook)

    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_step_end(self, trainer, step: int, loss: Tensor) -> None: ...
    def on_epoch_end(self, trainer, epoch: int) -> None: ...

    def on_fit_end(self, trainer) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # -- what subclasses implement
    def _setup(self, model: nn.Module) -> None: ...

    def _finalize(self, model: nn.Module) -> None:
        """Leave plain weights (the ones the method ends with) where the reparametrization was."""
        for name in self.names:
            unparametrize(*owner(model, name), leave_parametrized=True)

    def _own_weights(self, model: nn.Module, used: list[Tensor]) -> list[Tensor]:
        """The weights whose zeros are the reached sparsity: those the forward used (CS: its own hard mask)."""
        return used

    def _extra_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The learned parameters of the parametrizations (STR's thresholds, CS's scores)."""
        out = []
        for n in self.names:
            module, attr = owner(model, n)
            if parametrize.is_parametrized(module, attr):
                out += list(module.parametrizations[attr][0].parameters())
        return out

    def _extra_decay(self, weight_decay: float) -> float:
        return weight_decay

    def before_step(self, trainer) -> None:
        """Runs before every optimizer step (gradients final) when a subclass defines it."""

    # -- helpers
    def dense(self, model: nn.Module) -> list[Tensor]:
        """The trainable tensor behind each prunable weight (the parametrization's original, or the weight)."""
        return [dense_weight(*owner(model, n)) for n in self.names]

    def parametrizations(self, model: nn.Module) -> list[nn.Module]:
        """The (first) parametrization of each prunable weight."""
        out = []
        for n in self.names:
            module, attr = owner(model, n)
            out.append(module.parametrizations[attr][0])
        return out

    def parametrize(self, model: nn.Module, make) -> None:
        """Register ``make(weight)`` (an nn.Module) as the parametrization of every prunable weight."""
        for n in self.names:
            module, attr = owner(model, n)
            order = list(module._parameters)
            parametrize.register_parametrization(module, attr, make(getattr(module, attr)))
            module.parametrizations[attr].nptm_order = order


def unparametrize(module: nn.Module, attr: str, *, leave_parametrized: bool) -> None:
    """Remove the parametrization of ``module.attr`` (if any), the plain parameter back in its place in
    ``module.named_parameters()`` (and the state dict)."""
    if not parametrize.is_parametrized(module, attr):
        return
    order = getattr(module.parametrizations[attr], "nptm_order", [])
    parametrize.remove_parametrizations(module, attr, leave_parametrized=leave_parametrized)
    params = module._parameters
    ordered = [(k, params.pop(k)) for k in order if k in params]
    rest = list(params.items())
    params.clear()
    params.update(ordered + rest)


def owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(module, attribute) of a parameter name such as ``layer1.0.conv1.weight``."""
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr


def dense_weight(module: nn.Module, attr: str) -> Tensor:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr)


def zero_fraction(tensors) -> float:
    total = sum(t.numel() for t in tensors)
    zeros = sum(int(t.numel() - t.count_nonzero()) for t in tensors)
    return zeros / total if total else 0.0


@torch.no_grad()
def magnitude_masks(tensors: list[Tensor], pruned: int) -> list[Tensor]:
    """Keep all but the ``pruned`` smallest |w| over all ``tensors`` (one global top-k, from scratch)."""
    return ops.global_magnitude_masks(tensors, int(pruned))


SPARSE_TRAINING: Registry[type[SparseTraining]] = Registry("sparse-training method",
                                                          entry_point_group="nptm.sparse_training",
                                                          package="nptm.pruning.sparse_training")


def register(position: float = float("inf")):
    """Class decorator: register under ``cls.name`` (``position`` orders the names, as Table 2 lists them)."""
    def add(cls: type[SparseTraining]) -> type[SparseTraining]:
        return SPARSE_TRAINING.register(cls.name, cls, position=position)
    return add

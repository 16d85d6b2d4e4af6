"""Prunable weights and the boolean masks that keep pruned weights at zero during retraining."""
from __future__ import annotations

import fnmatch
import sys
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from nptm import ops

# Module-name segments that wrappers insert (torch.compile, FSDP, activation checkpointing); DDP and
# DataParallel add ``module.`` at the top, removed by unwrapping them.
WRAPPER_SEGMENTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})
_TOP_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, _TOP_WRAPPERS):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def clean_name(name: str) -> str:
    """A parameter or module name without wrapper segments (``a._orig_mod.b`` -> ``a.b``)."""
    return ".".join(s for s in name.split(".") if s not in WRAPPER_SEGMENTS)


def _is_dtensor(t) -> bool:
    """FSDP2 (fully_shard) parameters and their optimizer states are DTensors. One exists only once
    torch.distributed.tensor is imported, so it is looked up, not imported here (that costs about a second)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Clean name -> parameter for every name a parameter has (a shared parameter under each of its names)."""
    return {clean_name(n): p for n, p in unwrap(model).named_parameters(remove_duplicate=False)}


def _local(t: Tensor | None) -> Tensor | None:
    """This rank's shard of a DTensor (a view: masking it in place masks the DTensor); other tensors as they are."""
    return t.to_local() if _is_dtensor(t) else t


def _local_mask(mask: Tensor, p: Tensor) -> Tensor:
    """The part of a full-size mask that lies on this rank, when ``p`` is a DTensor."""
    if not _is_dtensor(p):
        return mask
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(mask.shape, p.device_mesh, p.placements)
    return mask[tuple(slice(o, o + n) for o, n in zip(offset, shape))]


def prunable_weights(
    model: nn.Module,
    include_linear: bool = False,
    *,
    types: Iterable[type[nn.Module]] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    spare_classifier: bool = False,
) -> dict[str, nn.Parameter]:
    """Clean parameter name -> weight, in module order, each parameter once (under its first name).

    A parameter is prunable when it is a weight of a module of one of ``types`` (its own parameters whose
    name contains ``weight``: ``weight``, MultiheadAttention's ``in_proj_weight``, an LSTM's
    ``weight_ih_l0``...) or its name matches an ``include`` pattern (fnmatch, e.g. ``"*.in_proj_weight"``),
    and it matches no ``exclude`` pattern. ``types`` defaults to the convolutions, plus ``nn.Linear`` with
    ``include_linear``; ``types=()`` selects by ``include`` only. ``spare_classifier`` leaves out the last
    ``nn.Linear``'s weight. Names carry no wrapper prefixes (DDP, torch.compile, FSDP).
    """
    if types is None:
        types = (nn.modules.conv._ConvNd, nn.Linear) if include_linear else (nn.modules.conv._ConvNd,)
    types = tuple(types)
    root = unwrap(model)
    last_linear = None
    if spare_classifier:
        linears = [m for m in root.modules() if isinstance(m, nn.Linear)]
        last_linear = linears[-1].weight if linears else None
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for mod_name, module in root.named_modules():
        for local, p in module.named_parameters(recurse=False):
            name = clean_name(f"{mod_name}.{local}" if mod_name else local)
            typed = isinstance(module, types) and "weight" in local
            if id(p) in seen or not (typed or any(fnmatch.fnmatchcase(name, pat) for pat in include)):
                continue
            if p is last_linear or any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
                continue
            seen.add(id(p))
            out[name] = p
    return out


class Masks(Mapping[str, Tensor]):
    """Parameter name -> bool mask (True = kept), shaped like the parameter.

    ``apply`` zeroes the pruned entries of the weights, their gradients and optimizer states;
    ``attach(optimizer)`` does it after every ``optimizer.step()``. A parameter known under several names
    (tied weights) is masked once, with the AND of its masks.
    """

    def __init__(self, masks: Mapping[str, Tensor]):
        self._masks = {name: m if m.dtype == torch.bool else m.bool() for name, m in masks.items()}
        self._model: weakref.ref[nn.Module] | None = None
        self._targets: list[tuple[nn.Parameter, Tensor]] = []
        self._hooks: list = []

    @classmethod
    def ones(cls, params: Mapping[str, Tensor]) -> "Masks":
        """Nothing pruned yet."""
        return cls({name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()})

    @classmethod
    def for_model(cls, model: nn.Module, **select) -> "Masks":
        """All-ones masks over ``prunable_weights(model, **select)``, bound to ``model``."""
        params = prunable_weights(model, **select)
        if not params:
            raise ValueError(f"{type(unwrap(model)).__name__} has no prunable weights for {select or 'the defaults'}")
        return cls.ones(params).bind(model)

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, sparsity={self.sparsity():.4f})"

    def to(self, device: torch.device | str) -> "Masks":
        return Masks({n: m.to(device) for n, m in self._masks.items()})

    def numel(self) -> int:
        return sum(m.numel() for m in self._masks.values())

    def _alive(self) -> list[int]:
        if not self._masks:
            return []
        return torch.stack([m.count_nonzero().cpu() for m in self._masks.values()]).tolist()

    def nonzero(self) -> int:
        """Number of kept entries."""
        return sum(self._alive())

    def sparsity(self) -> float:
        """Global fraction pruned."""
        total = self.numel()
        return 1.0 - self.nonzero() / total if total else 0.0

    def per_layer_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - a / m.numel() if m.numel() else 0.0 for (n, m), a in zip(self._masks.items(), self._alive())}

    @torch.no_grad()
    def bind(self, model: nn.Module) -> "Masks":
        """Find each mask's parameter in ``model`` (wrapped or not) and move the mask to its device. A
        parameter under several names gets the AND of their masks, stored under each name."""
        params = named_parameters(model)
        groups: dict[int, list[str]] = {}
        for n, m in self._masks.items():
            if n not in params:
                raise ValueError(f"mask {n!r} names no parameter of {type(unwrap(model)).__name__}")
            p = params[n]
            if p.shape != m.shape:
                hint = " (a sharded FSDP parameter: use use_orig_params with NO_SHARD or apply inside " \
                       "FSDP.summon_full_params(model, writeback=True))" if p.dim() == 1 and m.dim() != 1 else ""
                raise ValueError(f"mask {n!r} has shape {tuple(m.shape)} but the parameter has {tuple(p.shape)}{hint}")
            groups.setdefault(id(p), []).append(n)
        self._targets = []
        for names in groups.values():
            p = params[names[0]]
            mask = self._masks[names[0]].to(p.device)
            for n in names[1:]:
                mask = mask & self._masks[n].to(p.device)
            for n in names:
                self._masks[n] = mask
            self._targets.append((p, _local_mask(mask, p)))
        self._model = weakref.ref(model)
        return self

    @torch.no_grad()
    def apply(self, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the pruned entries of the weights, their .grad and the optimizer's per-parameter state
        buffers shaped like them (momentum_buffer, exp_avg, ...), of any dtypes, in one
        ``nptm.ops.apply_masks_`` call. ``model`` binds the masks when it is not the model they are bound to
        or its parameters moved to another device (call ``bind`` after replacing parameters)."""
        if model is not None:
            if self._model is None or self._model() is not model or any(p.device != m.device for p, m in self._targets):
                self.bind(model)
        elif self._model is None or self._model() is None:
            raise ValueError("Masks.apply needs the model the first time: masks.apply(model) or masks.bind(model)")
        params = [p for p, _ in self._targets]
        masks = [m for _, m in self._targets]
        extra: list[list[Tensor | None]] = [[_local(p.grad) for p in params]]
        if optimizer is not None:
            states = [optimizer.state.get(p, {}) for p in params]
            keys = dict.fromkeys(k for s, p in zip(states, params) for k, v in s.items() if isinstance(v, Tensor) and v.shape == p.shape)
            for key in keys:
                extra.append([_local(s[key]) if isinstance(s.get(key), Tensor) and s[key].shape == p.shape else None
                              for s, p in zip(states, params)])
        ops.apply_masks_([_local(p) for p in params], masks, extra=extra)

    def attach(self, optimizer: torch.optim.Optimizer, model: nn.Module | None = None) -> "Masks":
        """Apply the masks (weights, grads, ``optimizer``'s states) after every ``optimizer.step()``, through
        an optimizer step post-hook, until ``detach()``. ``model`` binds first (else the bound model is used)."""
        if model is not None:
            self.bind(model)
        elif self._model is None:
            raise ValueError("Masks.attach needs the model: masks.attach(optimizer, model) or Masks.for_model(model)")
        self.apply(optimizer=optimizer)  # start from masked weights and states
        self._hooks.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self.apply(optimizer=opt)))
        return self

    def detach(self) -> None:
        """Remove every hook ``attach`` registered."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def state_dict(self) -> dict[str, Tensor]:
        """Plain name -> bool tensor dict (loads with torch.load(weights_only=True))."""
        return {n: m.clone() for n, m in self._masks.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> "Masks":
        return cls(dict(state))

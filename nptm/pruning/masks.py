"""Prunable weights and the boolean masks that keep pruned weights at zero during retraining."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from nptm import ops


def prunable_weights(model: nn.Module, include_linear: bool = False) -> dict[str, nn.Parameter]:
    """Parameter name -> weight of every conv (and, with ``include_linear``, every linear) layer, in module order."""
    kinds = (nn.modules.conv._ConvNd, nn.Linear) if include_linear else (nn.modules.conv._ConvNd,)
    return {f"{name}.weight" if name else "weight": m.weight for name, m in model.named_modules() if isinstance(m, kinds)}


class Masks(Mapping[str, Tensor]):
    """Parameter name -> bool mask (True = kept), shaped like the parameter."""

    def __init__(self, masks: Mapping[str, Tensor]):
        self._masks = {name: m if m.dtype == torch.bool else m.bool() for name, m in masks.items()}

    @classmethod
    def ones(cls, params: Mapping[str, Tensor]) -> "Masks":
        """Nothing pruned yet."""
        return cls({name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()})

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
    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the pruned entries of the weights, their .grad and the optimizer's per-parameter state
        buffers shaped like them (momentum_buffer, exp_avg, ...), in one ``nptm.ops.apply_masks_`` call."""
        params = [model.get_parameter(n) for n in self._masks]
        for n, p in zip(list(self._masks), params):
            m = self._masks[n]
            if p.shape != m.shape:
                raise ValueError(f"mask {n!r} has shape {tuple(m.shape)} but the parameter has {tuple(p.shape)}")
            if m.device != p.device:  # e.g. masks loaded on CPU for a model on the GPU: move them once
                self._masks[n] = m.to(p.device)
        masks = list(self._masks.values())
        extra: list[list[Tensor | None]] = [[p.grad for p in params]]
        if optimizer is not None:
            states = [optimizer.state.get(p, {}) for p in params]
            keys = dict.fromkeys(k for s, p in zip(states, params) for k, v in s.items() if isinstance(v, Tensor) and v.shape == p.shape)
            for key in keys:
                extra.append([s[key] if isinstance(s.get(key), Tensor) and s[key].shape == p.shape else None for s, p in zip(states, params)])
        ops.apply_masks_(params, masks, extra=extra)

    def state_dict(self) -> dict[str, Tensor]:
        """Plain name -> bool tensor dict (loads with torch.load(weights_only=True))."""
        return {n: m.clone() for n, m in self._masks.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> "Masks":
        return cls(dict(state))

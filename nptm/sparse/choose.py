"""The per-layer choice: each float32 conv/linear runs sparse only where its measured sparse time beats its
dense time, on its own input from the example, at every batch size asked for. Denser layers than
``MAX_DENSITY`` stay dense unmeasured (the sparse kernel reaches a third to a half of the dense kernels'
FLOP rate, so it cannot win there); empty layers go sparse unmeasured (they only write their bias)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from nptm.sparse.modules import to_sparse

MAX_DENSITY = 0.7
MIN_SAMPLE_S = 2e-4  # fast calls are repeated so that one sample lasts at least this


@dataclass
class LayerChoice:
    """One conv/linear: its density, the median ms of the dense and sparse forms per batch size, the choice."""

    name: str
    kind: str
    shape: tuple[int, ...]
    density: float
    dense_ms: dict[int, float] = field(default_factory=dict)
    sparse_ms: dict[int, float] = field(default_factory=dict)
    sparse: bool = False
    reason: str = ""


def time_pair(dense: Callable[[], Tensor], sparse: Callable[[], Tensor], rounds: int) -> tuple[float, float]:
    """Median seconds per call of two functions timed in alternating order (A B, B A, ...); stops after
    3 rounds when every sample of one beats every sample of the other by 2x."""
    dense(), sparse()  # first calls build kernels and buffers
    t0 = time.perf_counter()
    dense(), sparse()
    inner = max(1, min(100, int(MIN_SAMPLE_S / max(time.perf_counter() - t0, 1e-7) * 2)))
    samples: dict[Callable, list[float]] = {dense: [], sparse: []}
    for r in range(rounds):
        for fn in (dense, sparse) if r % 2 == 0 else (sparse, dense):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[fn].append((time.perf_counter() - t0) / inner)
        d, s = samples[dense], samples[sparse]
        if r >= 2 and (max(s) * 2 < min(d) or max(d) * 2 < min(s)):
            break
    return statistics.median(samples[dense]), statistics.median(samples[sparse])


def candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> float32 Conv2d / Linear module on CPU (exact types: subclasses may change forward)."""
    return {name: m for name, m in model.named_modules()
            if type(m) in (nn.Conv2d, nn.Linear) and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"}


def _initial(name: str, module: nn.Module) -> tuple[LayerChoice, nn.Module | None]:
    w = module.weight
    density = float(w.count_nonzero()) / w.numel() if w.numel() else 0.0
    choice = LayerChoice(name, "conv" if isinstance(module, nn.Conv2d) else "linear", tuple(w.shape), density)
    sparse = to_sparse(module)
    if sparse is None:
        choice.reason = "padding mode or dtype the sparse op does not run"
    elif density == 0.0:
        choice.sparse, choice.reason = True, "no nonzero weight"
    elif density > MAX_DENSITY:
        choice.reason = f"density {density:.2f} > {MAX_DENSITY}"
    return choice, sparse


def choose_layers(model: nn.Module, batches: dict[int, tuple], rounds: int = 7,
                  measure: bool = True) -> tuple[list[LayerChoice], dict[str, nn.Module]]:
    """Run ``model`` on each batch (batch size -> inputs); each candidate layer times its dense and sparse
    forms on its own input in a forward pre-hook. Returns the choices and the sparse modules chosen.
    ``measure=False``: every layer the sparse op runs goes sparse, untimed."""
    choices, forms, hooks = {}, {}, []
    for name, module in candidates(model).items():
        choices[name], forms[name] = _initial(name, module)
        if forms[name] is not None and not measure:
            choices[name].sparse, choices[name].reason = True, "every layer asked sparse"
        if forms[name] is None or choices[name].reason:
            continue

        def hook(mod, args, name=name):
            c, b = choices[name], args[0].shape[0] if args and isinstance(args[0], Tensor) and args[0].dim() else None
            if b is None or b in c.dense_ms:
                return
            d, s = time_pair(lambda: mod.forward(*args), lambda: forms[name](*args), rounds)
            c.dense_ms[b], c.sparse_ms[b] = d * 1e3, s * 1e3

        hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for inputs in batches.values() if hooks else ():
                model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    for c in choices.values():
        if c.reason:
            continue
        slower = [b for b in c.dense_ms if c.sparse_ms[b] >= c.dense_ms[b]]
        c.sparse = bool(c.dense_ms) and not slower
        c.reason = "faster" if c.sparse else f"not faster at batch {slower[0]}" if slower else "not reached by the example"
    chosen = {n: forms[n] for n, c in choices.items() if c.sparse}
    return list(choices.values()), chosen

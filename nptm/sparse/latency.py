"""Measured CPU latency (``Latency``: interleaved medians with their spread) and the model as a user would deploy it
(``deploy``: sparsified only where that is faster at every batch size measured)."""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn

from nptm.pruning.masks import Masks, unwrap
from nptm.sparse.choose import LayerChoice
from nptm.sparse.freezing import frozen_or_eager
from nptm.sparse.sparsify import as_inputs, resize_batch, sparsify
from nptm.utils.threads import torch_threads

MIN_SAMPLE_S = 1e-3  # fast models are called repeatedly so that one sample lasts at least this


@dataclass(frozen=True)
class Latency:
    """Milliseconds per forward over ``repeats`` samples (each the mean of ``calls_per_sample`` calls): median,
    min, max, quartiles, and the samples in the order taken. ``latency["median_ms"]`` reads a field too."""

    median_ms: float
    min_ms: float
    max_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    calls_per_sample: int
    threads: int
    batch: int
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, samples_s: Sequence[float], inner: int, threads: int, batch: int) -> "Latency":
        taken = tuple(s * 1e3 for s in samples_s)
        ms = sorted(taken)
        q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        return cls(statistics.median(ms), ms[0], ms[-1], q[0], q[2], len(ms), inner, threads, batch, taken)

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __repr__(self) -> str:
        return (f"Latency(median {self.median_ms:.3f} ms, min-max {self.min_ms:.3f}-{self.max_ms:.3f}, quartiles "
                f"{self.q1_ms:.3f}-{self.q3_ms:.3f}; batch {self.batch}, {self.threads} threads, {self.repeats} samples "
                f"of {self.calls_per_sample} calls)")


def measure_latency(model: nn.Module | Mapping[str, nn.Module], example_input: Tensor | Sequence[Tensor], *, repeats: int = 20,
                    threads: int | None = None, warmup: int = 3) -> Latency | dict[str, Latency]:
    """Milliseconds per forward of ``example_input`` in ``torch.inference_mode`` as a ``Latency``: median, min, max
    and quartiles over ``repeats`` samples after ``warmup`` calls, with ``threads`` torch threads (default: the
    current number).

    Give a dict of models to time them interleaved (A B, B A, ...: load drift hits all alike); the result is
    then a dict of ``Latency`` under the same keys, whose ``samples_ms`` are paired round by round."""
    models = dict(model) if isinstance(model, Mapping) else {"model": model}
    inputs = as_inputs(example_input)
    samples: dict[str, list[float]] = {k: [] for k in models}
    inner: dict[str, int] = {}
    with torch_threads(threads), torch.inference_mode():
        for k, m in models.items():
            for _ in range(max(1, warmup)):
                t0 = time.perf_counter()
                m(*inputs)
            inner[k] = max(1, min(1000, int(MIN_SAMPLE_S / max(time.perf_counter() - t0, 1e-7)) + 1))
        for r in range(repeats):
            for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
                t0 = time.perf_counter()
                for _ in range(inner[k]):
                    models[k](*inputs)
                samples[k].append((time.perf_counter() - t0) / inner[k])
        n = torch.get_num_threads()
    out = {k: Latency.of(s, inner[k], n, inputs[0].shape[0]) for k, s in samples.items()}
    return out if isinstance(model, Mapping) else out["model"]


@dataclass
class Deployment:
    """What ``deploy`` chose: the module to run, whether it is the sparsified one, every layer's choice, and why."""

    module: nn.Module
    sparse: bool
    choices: list[LayerChoice]
    note: str


def deploy(model: nn.Module, masks: Masks | Mapping[str, Tensor] | None, example_input: Tensor | Sequence[Tensor], *,
           batch_sizes: Sequence[int] = (), threads: int | None = None, repeats: int = 7) -> Deployment:
    """The pruned model as a user would run it on CPU: ``sparsify``'s module (each layer chosen at the example's
    batch size and every size of ``batch_sizes``) when at least one layer runs sparse and the whole sparsified
    model is faster than the masked dense one at each of those sizes (interleaved medians of ``repeats``
    samples, both graphs frozen where ``freeze`` can follow them, as a user runs them); else the model itself with
    the masks applied (to a copy, when given)."""
    inputs = as_inputs(example_input)
    sparse = sparsify(model, inputs, masks, batch_sizes=batch_sizes, threads=threads, rounds=5)
    dense = model
    if masks is not None:
        dense = copy.deepcopy(unwrap(model)).eval()
        Masks(dict(masks)).bind(dense).apply(dense)
    choices = sparse.sparse_layers
    if not any(c.sparse for c in choices):
        return Deployment(dense, False, choices, "no layer runs faster sparse")
    for b in sorted({inputs[0].shape[0], *batch_sizes}):
        x = resize_batch(inputs, b)
        t = measure_latency({"sparse": frozen_or_eager(sparse, x)[0], "dense": frozen_or_eager(dense, x)[0]}, x,
                            repeats=repeats, threads=threads)
        if t["sparse"].median_ms >= t["dense"].median_ms:
            return Deployment(dense, False, choices, f"the sparsified model is not faster at batch {b} "
                              f"({t['sparse'].median_ms:.3f} vs {t['dense'].median_ms:.3f} ms dense)")
    return Deployment(sparse, True, choices, f"{sum(c.sparse for c in choices)} of {len(choices)} layers sparse")


def deployable(model: nn.Module, masks: Masks | Mapping[str, Tensor] | None, example_input: Tensor | Sequence[Tensor], *,
               batch_sizes: Sequence[int] = (), threads: int | None = None) -> nn.Module:
    """``deploy(...).module``: the sparsified model where it is faster at every batch size asked, else the masked
    dense model."""
    return deploy(model, masks, example_input, batch_sizes=batch_sizes, threads=threads).module

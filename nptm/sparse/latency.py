"""Measured CPU latency (interleaved medians with their spread) and the model as a user would deploy it."""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from nptm.pruning.masks import Masks, unwrap
from nptm.sparse.sparsify import as_inputs, sparsify

MIN_SAMPLE_S = 1e-3  # fast models are called repeatedly so that one sample lasts at least this


@contextlib.contextmanager
def torch_threads(threads: int | None):
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _stats(samples: list[float], inner: int, threads: int, batch: int) -> dict:
    ms = sorted(s * 1e3 for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1], "q1_ms": q[0], "q3_ms": q[2],
            "repeats": len(ms), "calls_per_sample": inner, "threads": threads, "batch": batch}


def measure_latency(model: nn.Module | Mapping[str, nn.Module], example_input: Tensor | Sequence[Tensor], *, repeats: int = 20,
                    threads: int | None = None, warmup: int = 3) -> dict:
    """Milliseconds per forward of ``example_input`` in ``torch.inference_mode``: median, min, max and quartiles
    over ``repeats`` samples after ``warmup`` calls, with ``threads`` torch threads (default: the current number).

    Give a dict of models to time them interleaved (A B, B A, ...: load drift hits all alike); the result is
    then a dict of such dicts under the same keys."""
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
    out = {k: _stats(s, inner[k], n, inputs[0].shape[0]) for k, s in samples.items()}
    return out if isinstance(model, Mapping) else out["model"]


def deployable(model: nn.Module, masks: Masks | Mapping[str, Tensor] | None, example_input: Tensor | Sequence[Tensor], *,
               threads: int | None = None) -> nn.Module:
    """The pruned model as a user would run it on CPU: ``sparsify``'s module when at least one layer runs
    faster sparse (decided at the example's batch size only, to stay cheap), else the model itself with the
    masks applied (to a copy, when given)."""
    sparse = sparsify(model, example_input, masks, batch_sizes=(), threads=threads, rounds=5)
    if any(c.sparse for c in sparse.sparse_layers):
        return sparse
    if masks is None:
        return model
    dense = copy.deepcopy(unwrap(model)).eval()
    Masks(dict(masks)).bind(dense).apply(dense)
    return dense

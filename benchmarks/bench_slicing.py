"""Filter slicing (PFEC-like, ~50% of the channels kept): nptm.ops.gather_channels (all tensors in one
call) vs a per-tensor ``index_select`` loop (how Torch-Pruning slices). Every residual block's first
conv keeps its filters with the largest L1 norm; its BN's weight, bias and running stats and the next
conv's input channels follow. Floor: 2·b·(kept elements) over every tensor touched.
"""
from __future__ import annotations

import workloads as W
from harness import Case, Spec, Timed, pytest_bench

KEEP = 0.5


def specs(device: str, full: bool) -> list[Spec]:
    return [
        Spec("gather_channels", f"{name} {dt} keep={KEEP}", ("nptm", "index_select_loop"), (name, dt))
        for name in W.MODELS
        for dt in W.dtypes(device)
    ]


def build(spec: Spec, device: str) -> Case:
    from nptm import ops

    name, dt = spec.params
    plan = W.channel_plan(name, device, dt, KEEP)
    timed = {
        "nptm": Timed(lambda: ops.gather_channels(plan)),
        "index_select_loop": Timed(lambda: [t.index_select(d, i) for t, d, i in plan]),
    }
    floor = sum(2 * t.element_size() * t.numel() // t.shape[d] * i.numel() for t, d, i in plan)
    return Case(spec, device, timed, bytes=floor, keep=[plan])


def test_gather_channels(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)

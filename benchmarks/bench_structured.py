"""Structured pruning's inference speedup: eval forward of a batch through torchvision ResNet-50 and
MobileNetV2 with 30% of every prunable channel group removed (``prune_channels``, L1 scores), kept counts
rounded to multiples of 1 and of 8, against the dense model and next to the FLOPs speedup
(``nptm.models.count_flops``). Pruned and dense are timed round-robin.
"""
from __future__ import annotations

import torch

from harness import Case, Spec, Timed, Unavailable, pytest_bench

RATIO, BATCH, SIZE = 0.3, 8, 128


def specs(device: str, full: bool) -> list[Spec]:
    return [
        Spec("structured_inference", f"{name} {RATIO:.0%} round-to={r} b{BATCH} {SIZE}px", ("pruned", "dense"), (name, r), True)
        for name in ("resnet50", "mobilenet_v2")
        for r in (1, 8)
    ]


def build(spec: Spec, device: str) -> Case:
    name, round_to = spec.params
    try:
        import torchvision

        from nptm.models import count_flops
        from nptm.pruning.structured import prune_channels
    except ImportError as e:
        raise Unavailable(f"structured pruning is not available ({e})") from None
    torch.manual_seed(0)
    dense = getattr(torchvision.models, name)().eval()
    pruned = prune_channels(dense, "l1_filters", RATIO, round_to=round_to).to(device).eval()
    dense = dense.to(device)
    ratio = count_flops(dense, (3, SIZE, SIZE)) / count_flops(pruned, (3, SIZE, SIZE))
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=device)

    def forward(m):
        with torch.inference_mode():
            m(x)

    timed = {"pruned": Timed(lambda: forward(pruned)), "dense": Timed(lambda: forward(dense))}
    note = lambda t: f"measured {t['dense'] / t['pruned']:.2f}x vs FLOPs {ratio:.2f}x" if {"dense", "pruned"} <= set(t) else None  # noqa: E731
    return Case(spec, device, timed, note=note, keep=[dense, pruned, x])


def test_structured_inference(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)

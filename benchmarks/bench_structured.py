"""Structured pruning's inference speedup: eval forward of a batch through torchvision ResNet-50 and
MobileNetV2 with 30% of every prunable channel group removed (``prune_channels``, L1 scores), kept counts
rounded to multiples of 1 and of 8, against the dense model and next to the FLOPs speedup
(``nptm.models.count_flops``). Pruned and dense are timed round-robin.
"""
from __future__ import annotations

import torch

from bench_training import inference_case
from harness import Case, Spec, Unavailable, pytest_bench

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

        from nptm.pruning.structured import prune_channels
    except ImportError as e:
        raise Unavailable(f"structured pruning is not available ({e})") from None
    torch.manual_seed(0)
    dense = getattr(torchvision.models, name)().eval()
    pruned = prune_channels(dense, "l1_filters", RATIO, round_to=round_to).to(device).eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=device)
    return inference_case(spec, device, dense.to(device), pruned, x)


def test_structured_inference(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)

"""The dense routes of a conv that stays dense, per layer: torch's ``nn.Conv2d`` + a separate ReLU (what
``sparsify`` left before ``DenseConv2d``), ``DenseConv2d`` (oneDNN called directly, bias fused, ReLU in place),
both on a channels_last input (``DenseConv2d`` then runs a prepacked weight), the channels_last round trip of an
NCHW input through the prepacked weight, nptm's sparse kernel on the dense weight (``nptm.ops.sparse_conv2d`` at
density 1) and, for a depthwise conv, nptm's NCHW depthwise kernel (``nptm.ops.depthwise_conv2d``, which
``DenseConv2d`` runs on NCHW inputs). Every distinct depthwise conv and the stem of MobileNetV2, or
the convs of ResNet-50 that global magnitude leaves dense, at 224 px. Interleaved samples, CPU time of one thread
(``--threads N``: wall time with N threads); prints the best and median ms and each route's best against torch's.

    python benchmarks/bench_dense.py [--model mobilenet_v2|resnet50] [--batch 1] [--rounds 15] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

from nptm import ops
from nptm.sparse import DenseConv2d

RESNET50_DENSE = ("conv1", "layer1.0.conv2", "layer1.1.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1")


def layers(model_name: str, batch: int) -> list[tuple[str, torch.nn.Conv2d, torch.Tensor]]:
    """(name, conv, its input) for the distinct convs benchmarked (random-init weights)."""
    model = getattr(torchvision.models, model_name)().eval()
    seen, found = set(), []

    def keep(name, conv, x):
        mobile = conv.groups > 1 or conv.in_channels == 3
        key = (tuple(conv.weight.shape), conv.stride, tuple(x.shape))
        if (mobile if model_name == "mobilenet_v2" else name in RESNET50_DENSE) and key not in seen:
            seen.add(key)
            found.append((name, conv, x))

    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: keep(n, m, a[0])) for n, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(batch, 3, 224, 224))
    for h in hooks:
        h.remove()
    return found


def routes(conv: torch.nn.Conv2d, x: torch.Tensor) -> dict:
    w, b = conv.weight.detach(), torch.randn(conv.out_channels)
    dense = DenseConv2d(w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    dense.clamp_min = 0.0
    cl = x.contiguous(memory_format=torch.channels_last)
    values, taps, row_ptr = ops.compress_weight(w, 1, conv.groups)
    geometry = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    fns = {
        "torch": lambda: F.relu(F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)),
        "DenseConv2d": lambda: dense(x),
        "torch CL": lambda: F.relu(F.conv2d(cl, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)),
        "DenseConv2d CL": lambda: dense(cl),
        "CL round trip": lambda: dense(x.contiguous(memory_format=torch.channels_last)).contiguous(),
        "nptm kernel": lambda: ops.sparse_conv2d(x, values, taps, row_ptr, tuple(w.shape), b, clamp_min=0.0, **geometry),
    }
    if conv.groups == conv.in_channels == conv.out_channels:
        fns["nptm depthwise"] = lambda: ops.depthwise_conv2d(x, w, b, stride=conv.stride, padding=conv.padding,
                                                             dilation=conv.dilation, clamp_min=0.0)
    return fns


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v2", choices=["mobilenet_v2", "resnet50"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    print(f"{args.model} b{args.batch}, {args.threads} thread(s), {'CPU' if args.threads == 1 else 'wall'} time, "
          f"best (median) ms of {args.rounds} interleaved samples; x: best against torch's NCHW conv + ReLU")
    totals: dict[str, float] = {}
    bases: dict[str, float] = {}  # torch's time over the layers each route ran
    with torch.inference_mode():
        for name, conv, x in layers(args.model, args.batch):
            fns = routes(conv, x)
            want = fns["torch"]()
            for k, fn in fns.items():
                got = fn()
                assert (got - want).abs().max() <= 1e-4 * want.abs().max(), (name, k)
            t0 = clock()
            fns["torch"]()
            inner = max(1, int(2e-3 / max(clock() - t0, 1e-6)))
            samples: dict[str, list[float]] = {k: [] for k in fns}
            order = list(fns)
            for r in range(args.rounds):
                for k in order if r % 2 == 0 else order[::-1]:
                    t0 = clock()
                    for _ in range(inner):
                        fns[k]()
                    samples[k].append((clock() - t0) / inner * 1e3)
            base = min(samples["torch"])
            cells = []
            for k, v in samples.items():
                totals[k] = totals.get(k, 0.0) + min(v)
                bases[k] = bases.get(k, 0.0) + base
                cells.append(f"{k} {min(v):.3f} ({statistics.median(v):.3f}) {base / min(v):.2f}x")
            shape = f"{conv.in_channels}->{conv.out_channels} {conv.kernel_size[0]}x{conv.kernel_size[1]}/{conv.stride[0]} g{conv.groups}"
            print(f"{name:22s} {shape:22s} {x.shape[2]}²: " + " | ".join(cells), flush=True)
    print("sum of best: " + " | ".join(f"{k} {v:.3f} ms {bases[k] / v:.2f}x" for k, v in totals.items()))


if __name__ == "__main__":
    main()

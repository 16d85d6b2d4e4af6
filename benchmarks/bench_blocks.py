"""The register-blocked sparse kernel per layer: every distinct conv of ResNet-50 (224 px) pruned to ``--sparsity``
alone, unstructured (magnitude) and in blocks of K output channels at one (input channel, tap) (K = 2, 4, 8;
whole blocks zeroed by their L2 norm), each timed against torch's dense conv (oneDNN) on the same input.
Prints the ms and the rate on the MACs each computes (GFLOP/s; a stored block's zeros count as computed), and
the kernel's ISA. ``block_prune`` is also what ``profile_sparse.py --block K`` prunes with.

    python benchmarks/bench_blocks.py [--sparsity 0.9] [--batch 1] [--blocks 2 4 8] [--rounds 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from nptm import ops
from nptm.sparse import SparseConv2d


@torch.no_grad()
def block_masks(weights: list[torch.Tensor], sparsity: float, block: int) -> list[torch.Tensor]:
    """Masks zeroing the ``sparsity`` fraction of blocks (``block`` consecutive output channels at one input
    channel and tap) with the smallest L2 norm, one threshold over all ``weights`` (out channels divisible)."""
    norms = [w.detach().reshape(w.shape[0] // block, block, -1).norm(dim=1) for w in weights]
    flat = torch.cat([n.reshape(-1) for n in norms])
    k = round(sparsity * flat.numel())
    thr = flat.kthvalue(k).values if k else flat.min() - 1
    return [(n > thr)[:, None].expand(-1, block, -1).reshape(w.shape) for n, w in zip(norms, weights)]


@torch.no_grad()
def block_prune(model: torch.nn.Module, sparsity: float, block: int) -> None:
    """Global block-norm pruning of every conv and linear layer whose output channels ``block`` divides."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.weight.shape[0] % block == 0]
    for m, mask in zip(layers, block_masks([m.weight for m in layers], sparsity, block)):
        m.weight.mul_(mask)


def resnet50_convs(size: int = 224) -> list[tuple]:
    """Distinct (in, out, kernel, stride, input size) of ResNet-50's convs, read off one forward."""
    import torchvision

    seen: list[tuple] = []

    def hook(m, args):
        shape = (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], args[0].shape[-1])
        if shape not in seen:
            seen.append(shape)

    model = torchvision.models.resnet50().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return seen


def time_all(fns: dict, rounds: int, stat=min) -> dict[str, float]:
    """Seconds per call (the fastest sample by default: on a loaded machine the others measure the load), the
    functions interleaved in rotating order, each sample >= 2 ms."""
    for fn in fns.values():
        fn()
    inner = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        inner[name] = max(1, int(2e-3 / max(time.perf_counter() - t0, 1e-7)))
    samples = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fns[name]()
            samples[name].append((time.perf_counter() - t0) / inner[name])
    return {n: stat(s) for n, s in samples.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--blocks", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--median", action="store_true", help="report the median sample, not the fastest")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    print(f"ISA {ops.sparse_conv2d_isa()}, {torch.get_num_threads()} threads, sparsity {args.sparsity}, batch {args.batch}")
    head = ["layer (in->out k/s, px)", "dense"] + ["unstr."] + [f"{k}x1" for k in args.blocks]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    totals = {h: [0.0, 0.0] for h in head[1:]}  # ms, computed GFLOP
    for cin, cout, k, s, hw in resnet50_convs():
        conv = torch.nn.Conv2d(cin, cout, k, s, k // 2, bias=False).eval()
        w = conv.weight.detach()
        x = torch.randn(args.batch, cin, hw, hw)
        pixels = args.batch * ((hw + 2 * (k // 2) - k) // s + 1) ** 2
        forms = {"dense": (lambda w=w: F.conv2d(x, w, None, s, k // 2), w.numel())}
        thr = w.abs().flatten().kthvalue(round(args.sparsity * w.numel())).values
        unstr = SparseConv2d(w * (w.abs() > thr), None, s, k // 2)
        forms["unstr."] = (lambda m=unstr: m(x), unstr.values.numel())
        for b in args.blocks:
            m = SparseConv2d(w * block_masks([w], args.sparsity, b)[0], None, s, k // 2, block=b)
            forms[f"{b}x1"] = (lambda m=m: m(x), m.values.numel())
        with torch.inference_mode():
            t = time_all({n: f for n, (f, _) in forms.items()}, args.rounds, statistics.median if args.median else min)
        cells = []
        for n, (_, stored) in forms.items():
            gflop = 2 * stored * pixels / 1e9
            totals[n][0] += t[n] * 1e3
            totals[n][1] += gflop
            cells.append(f"{t[n] * 1e3:.3f} ms {gflop / t[n]:.0f}")
        print(f"| {cin}->{cout} {k}x{k}/{s}, {hw}² | " + " | ".join(cells) + " |", flush=True)
    print("| all distinct layers | " + " | ".join(f"{ms:.2f} ms {g / ms * 1e3:.0f}" for ms, g in totals.values()) + " |")
    print(f"cells: {'median' if args.median else 'fastest'} ms per call of {args.rounds} samples and GFLOP/s on the MACs computed "
          "(dense: all; sparse: the stored values)")


if __name__ == "__main__":
    main()

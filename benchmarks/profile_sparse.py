"""Where a sparsified model spends its time: each conv/linear of ``nptm.sparsify``'s result timed in place
(forward hooks, median over runs) with its density, dense MACs and the rate it reaches on the MACs it computes
(useful GFLOP/s), the totals of the sparse and of the dense layers, then the time by operator (no hooks).

    python benchmarks/profile_sparse.py [--model resnet50] [--sparsity 0.9] [--batch 1] [--runs 30] [--pointwise]
                                        [--pruning lamp|uniform|4x1] [--block K]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from bench_blocks import block_prune
from bench_sparse import PRUNING, pruned_model  # the same masked models as the benchmark

from nptm import ops
from nptm.sparse import DenseConv2d, SparseConv2d, SparseLinear, sparsify


def macs(module: torch.nn.Module, out: torch.Tensor) -> tuple[float, float]:
    """(dense MACs, nonzero MACs) of one call producing ``out``."""
    per_out = out.numel() / out.shape[1] if out.dim() > 2 else out.shape[0]
    if isinstance(module, (SparseConv2d, SparseLinear)):
        return math.prod(module.weight_shape) * per_out, module.values.numel() * per_out
    w = module.weight
    return w.numel() * per_out, float((w != 0).sum()) * per_out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--pointwise", action="store_true", help="prune the 1x1 convs only (as bench_sparse does MobileNetV2)")
    p.add_argument("--pruning", default="", choices=list(PRUNING), help="global magnitude (default), lamp, uniform "
                                                                         "per-layer magnitude, or 4x1 blocks")
    p.add_argument("--block", type=int, default=0, help="prune whole blocks of K output channels by global block norm instead")
    args = p.parse_args(argv)
    if args.block:
        model = pruned_model(args.model, 0.0)
        block_prune(model, args.sparsity, args.block)
    else:
        model = pruned_model(args.model, args.sparsity, args.pointwise, args.pruning)
    x = torch.randn(args.batch, 3, args.size, args.size)
    fast = sparsify(model, x, batch_sizes=())
    layers = {n: m for n, m in fast.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, SparseConv2d, SparseLinear, DenseConv2d))}
    samples: dict[str, list[float]] = {n: [] for n in layers}
    work: dict[str, tuple[float, float]] = {}
    start: dict[str, float] = {}
    handles = []
    for n, m in layers.items():
        def before(_m, _a, n=n):
            start[n] = time.perf_counter()

        def after(_m, _a, out, n=n):  # returns None: the output is left alone
            samples[n].append(time.perf_counter() - start[n])
            work.setdefault(n, macs(_m, out))

        handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
    totals = []
    with torch.inference_mode():
        for _ in range(3):
            fast(x)
        for s in samples.values():
            s.clear()
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fast(x)
            totals.append(time.perf_counter() - t0)
    total = statistics.median(totals) * 1e3
    rows = []
    for n, m in layers.items():
        ms = statistics.median(samples[n]) * 1e3
        dense_macs, nnz_macs = work[n]
        kind = ("sparse" if isinstance(m, (SparseConv2d, SparseLinear)) else "dense" if not isinstance(m, DenseConv2d)
                else "dwconv" if m.is_depthwise() and x.is_contiguous() else "onednn")  # dwconv: nptm's depthwise kernel
        useful = (nnz_macs if kind == "sparse" else dense_macs) * 2 / ms / 1e6
        rows.append((n, kind, nnz_macs / dense_macs, ms, dense_macs, nnz_macs, useful))
    pattern = f"{args.block}x1 blocks" if args.block else "unstructured"
    print(f"{args.model} s={args.sparsity} {pattern} b{args.batch}, {torch.get_num_threads()} threads, {ops.sparse_conv2d_isa()}: "
          f"{total:.2f} ms per forward (median of {args.runs})")
    print(f"{'layer':34s} {'run':6s} {'density':>7s} {'ms':>7s} {'share':>6s} {'dense MMAC':>10s} {'GFLOP/s':>8s}")
    for n, kind, d, ms, dm, nm, g in rows:
        print(f"{n:34s} {kind:6s} {d:7.3f} {ms:7.3f} {ms / total:6.1%} {dm / 1e6:10.1f} {g:8.1f}")
    for kind in ("sparse", "onednn", "dwconv", "dense"):
        sel = [r for r in rows if r[1] == kind]
        if sel:
            ms, dm, nm = sum(r[3] for r in sel), sum(r[4] for r in sel), sum(r[5] for r in sel)
            done = nm if kind == "sparse" else dm
            print(f"{kind} layers: {len(sel)}, {ms:.2f} ms ({ms / total:.0%} of the forward), density {nm / dm:.3f}, "
                  f"{nm / 1e6:.0f} of {dm / 1e6:.0f} MMAC nonzero, {2 * done / ms / 1e6:.1f} GFLOP/s on the MACs computed")
    for h in handles:
        h.remove()
    with torch.inference_mode(), torch.profiler.profile() as prof:  # no hooks: time by operator
        for _ in range(args.runs):
            fast(x)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    whole = sum(e.self_cpu_time_total for e in events)
    print("time by operator (torch.profiler, self time): " + ", ".join(
        f"{e.key} {e.self_cpu_time_total / whole:.1%}" for e in events[:6]))


if __name__ == "__main__":
    main()

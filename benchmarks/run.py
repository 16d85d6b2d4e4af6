#!/usr/bin/env python
"""Runs every nptm benchmark against its PyTorch baselines and the machine's copy bandwidth.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--threads N] --json FILE [--markdown FILE]

Writes JSON {machine (CPU model, cores, pinned torch threads, load average at start and end, malloc
settings, ...),
copy_gbps, records: [{name, device, workload, ours, ours_s, baseline, baseline_s, rounds, speedup,
speedup_min, speedup_max, bytes, gbps, frac_bw, frac_bw_min, frac_bw_max, target, note}]}: every case
times its impls and a 100 MiB copy interleaved over >= 7 rounds; speedup and frac_bw are medians of
the per-round ratios with their min and max; bytes = the SPEC floor bytes of our op, gbps =
bytes/ours_s/1e9, frac_bw = per-round (bytes/ours) / (copy bytes/copy). Prints the same as a table and
optionally writes it as Markdown (the README "Performance" section) with the machine named.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (HERE, os.path.dirname(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import bench_apply  # noqa: E402
import bench_slicing  # noqa: E402
import bench_sparse  # noqa: E402
import bench_sparse_training  # noqa: E402
import bench_structured  # noqa: E402
import bench_topk  # noqa: E402
import bench_training  # noqa: E402
import harness as H  # noqa: E402

MODULES = [bench_topk, bench_apply, bench_slicing, bench_training, bench_sparse_training, bench_structured, bench_sparse]

METHOD = """\
How these numbers are taken: each case times its implementations and a 100 MiB `copy_` interleaved
(A B C, C B A, ...) for at least 7 rounds after warm-up, in one process, one case at a time, with the
thread count pinned and glibc told to keep freed memory (`mallopt`: no trimming, no mmap below 32 MiB;
else fresh outputs page-fault or not from one process to the next) (`torch.cuda.synchronize` around
every sample on GPU; sub-millisecond calls are batched per sample; calls over 1 s are not warmed up). Times are medians over rounds; *speedup* and
*of copy BW* are medians of the per-round ratios, with their min–max over the rounds. *GB/s* counts the SPEC's floor bytes for our op, not what any
implementation actually moves: mask application N·(2b+m) (weights only) or N·(2b·(2+S)+m) with
gradients and S=1 momentum buffer; global top-k N·b + N·m (one read of the weights, one write of the
bool masks; + N·m to read the old masks in a second IMP round); filter slicing 2·b·(kept elements).
b = bytes per weight, m = 1 (bool masks). *of copy BW* divides by `dst.copy_(src)` over 100 MiB
(read + write) timed in the same rounds; ResNet-56 fits in cache, so it can exceed 1.
Baselines: `prune.global_unstructured` (L1Unstructured) on fresh modules each repetition (module
set-up untimed; the timed call includes its own `weight = orig * mask`); `kthvalue`/`topk` include
the concat, the abs and building the masks; `mul_loop` and `foreach_mul_` multiply by float masks;
`prune_hooks_fwd` is the forward pre-hooks' `orig * mask` per step (its backward costs again);
`index_select_loop` is a per-tensor `index_select`. End-to-end rows (random data, SGD Nesterov) are
timed round-robin; `train_step` masks with `Masks.apply(model, optimizer)` after every step (weights,
grads, momentum). *target* marks the project's goals as met or MISSED; nothing is asserted."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="7 rounds; sparsity 0.9 only (a few minutes on 2 quiet cores)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--json", required=True, metavar="FILE", help="write the records here")
    p.add_argument("--markdown", metavar="FILE", help="also write a Markdown section (machine + table) here")
    p.add_argument("--only", default="", metavar="REGEX", help="run only the ops whose name matches")
    p.add_argument("--workload", default="", metavar="REGEX", help="run only the workloads that match")
    p.add_argument("--threads", type=int, default=os.cpu_count(), metavar="N", help="torch/OpenMP threads, pinned for the run (default: all cores)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda":
        from nptm.ops import has_cuda_kernels

        if not torch.cuda.is_available():
            p.error("--device cuda but torch sees no GPU")
        if not has_cuda_kernels():
            p.error("--device cuda but nptm._C was built without its CUDA kernels")
    return args


def run(args) -> tuple[list[dict], list[str], float]:
    torch.set_num_threads(args.threads)
    H.KEPT_HEAP = H.keep_heap()
    args.load = os.getloadavg()[0]
    budget = H.Budget.for_run(args.quick, args.device)
    copy = H.copy_case(args.device)
    times, _ = H.time_case(copy, budget)
    recs = H.records(copy, times, None)
    copy_gbps = recs[0]["gbps"]
    recs[0].update(frac_bw=1.0, frac_bw_min=1.0, frac_bw_max=1.0)
    todo = [(m, s) for m in MODULES for s in m.specs(args.device, not args.quick) if re.search(args.only, s.op)
            and re.search(args.workload, s.workload)]
    skipped = []
    bar = tqdm(todo, unit="case", file=sys.stderr, dynamic_ncols=True)
    for mod, spec in bar:
        bar.set_description(f"{spec.op} {spec.workload}")
        try:
            case = mod.build(spec, args.device)
        except H.Unavailable as e:
            skipped.append(f"{spec.op} {spec.workload}: {e}")
            continue
        times, errors = H.time_case(case, budget, progress=lambda n: bar.set_postfix_str(n, refresh=False), copy=copy)
        recs += (new := H.records(case, times, copy_gbps, errors, copy_bytes=copy.bytes))
        tqdm.write(H.text_table(new), file=sys.stderr)  # each case as it ends: a run cut short keeps what it timed
        del case
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return recs, skipped, copy_gbps


def markdown(recs: list[dict], skipped: list[str], copy_gbps: float, args, elapsed: float) -> str:
    m = H.machine(args.device)
    where = f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads)"
    if args.device == "cuda":
        where = f"{m['gpu']} (CUDA {m['cuda']}) with {where}"
    cmd = "python benchmarks/run.py" + (" --quick" if args.quick else "") + f" --device {args.device} --json ... --markdown ..."
    lines = [
        "## Performance",
        "",
        f"Device **{args.device}**: {where}; torch {m['torch']}; nptm CUDA kernels compiled: {m['cuda_kernels']}; "
        f"glibc heap kept: {'yes' if m['malloc'] else 'no'}.",
        f"Copy bandwidth measured in the same run: **{copy_gbps:.1f} GB/s**. Load average (1 min) at the start: {args.load:.1f}, at the end: {m['load_avg'][0]:.1f}.",
        f"Regenerate with `{cmd}` ({elapsed / 60:.1f} min).",
        "",
        H.markdown_table(recs),
        "",
        METHOD,
    ]
    if skipped:
        lines += ["", "Skipped here: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    t0 = time.time()
    recs, skipped, copy_gbps = run(args)
    elapsed = time.time() - t0
    with open(args.json, "w") as f:
        json.dump({"machine": H.machine(args.device) | {"load_avg_start": args.load}, "copy_gbps": copy_gbps, "records": recs}, f, indent=1)
    print(H.text_table(recs))
    print(f"\ncopy bandwidth {copy_gbps:.1f} GB/s; {len(recs)} records in {elapsed:.0f} s -> {args.json}")
    for s in skipped:
        print(f"skipped: {s}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(recs, skipped, copy_gbps, args, elapsed))
        print(f"markdown -> {args.markdown}")


if __name__ == "__main__":
    main()

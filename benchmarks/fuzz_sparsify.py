"""The long fuzzing run of ``sparsify`` (tests/sparse/sparse_graph_gen.py, sparse_fuzz_oracle.py): models by seed,
counts of outcomes (sparsified, per-layer, refused, loaded in a fresh process), every crash and mismatch with
its seed; exit 1 on any.

    python benchmarks/fuzz_sparsify.py --models 10000 [--start 0] [--per-process 500]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "sparse")]  # this tree's nptm, the generator and oracle
from sparse_fuzz_oracle import fuzz  # noqa: E402

KEYS = ("generated", "sparsified", "per-layer", "refused", "not saved", "loaded", "mismatch", "load mismatch", "crash")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=10000)
    p.add_argument("--start", type=int, default=0, help="first seed (seeds start .. start+models-1)")
    p.add_argument("--per-process", type=int, default=500, help="saved models loaded per fresh process (and counts printed)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)  # tiny models: threads only contend
    total, bad, t0 = None, [], time.monotonic()
    for start in range(args.start, args.start + args.models, args.per_process):
        seen, found = fuzz(range(start, min(start + args.per_process, args.start + args.models)), args.per_process,
                           log=lambda line: print(line, flush=True))
        total = seen if total is None else total + seen
        bad += found
        print(f"{total['generated']} models, {time.monotonic() - t0:.0f} s: "
              + ", ".join(f"{k} {total[k]}" for k in KEYS), flush=True)
    reasons = sorted(k for k in total if ": " in k)
    for k in reasons:
        print(f"  {k}: {total[k]}")
    print(f"{total['generated']} models (seeds {args.start}..{args.start + args.models - 1}) in {time.monotonic() - t0:.0f} s: "
          + ", ".join(f"{k} {total[k]}" for k in KEYS) + f"; {total['sparse layers']} sparse layers and {total['onednn layers']} "
          f"DenseConv2d, {total['fused']} of them with a fused clamp, {total['residuals']} with a fused residual")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The long fuzzing run of the structured engine (tests/pruning/graph_gen.py, fuzz_oracle.py): graphs by seed,
counts of outcomes (pruned / kept whole / refused), every crash and mismatch with its seed; exit 1 on any.

    python benchmarks/fuzz_structured.py --graphs 5000 [--start 0] [--onnx-every 50]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from collections import Counter

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pruning"))
from fuzz_oracle import check  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graphs", type=int, default=5000)
    p.add_argument("--start", type=int, default=0, help="first seed (seeds start .. start+graphs-1)")
    p.add_argument("--report-every", type=int, default=1000, help="print the counts so far every N graphs")
    p.add_argument("--onnx-every", type=int, default=50, help="also export every Nth pruned model to ONNX (0: never)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)  # tiny models: threads only contend
    seen, bad, t0 = Counter(), [], time.monotonic()
    for seed in range(args.start, args.start + args.graphs):
        try:
            seen[check(seed, onnx=bool(args.onnx_every) and seed % args.onnx_every == 0)] += 1
        except AssertionError as e:
            seen["mismatch"] += 1
            bad.append(f"seed {seed}: mismatch: {str(e).splitlines()[0]}")
            print(bad[-1], flush=True)
        except Exception as e:  # noqa: BLE001  (a crash of the engine)
            seen["crash"] += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            bad.append(f"seed {seed}: crash: {type(e).__name__}: {(str(e).splitlines() or [''])[0]} "
                       f"({os.path.basename(where.filename)}:{where.lineno})")
            print(bad[-1], flush=True)
        if (seed - args.start + 1) % args.report_every == 0:
            print(f"{seed - args.start + 1} graphs, {time.monotonic() - t0:.0f} s: {dict(seen)}", flush=True)
    counts = ", ".join(f"{k} {seen[k]}" for k in ("pruned", "kept whole", "refused", "crash", "mismatch"))
    print(f"{sum(seen.values())} graphs (seeds {args.start}..{args.start + args.graphs - 1}) in "
          f"{time.monotonic() - t0:.0f} s: {counts}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""A study as units, end to end: one process against ``--jobs 2``, the per-unit overhead of the graph, and a rerun
of a finished study.

    python benchmarks/bench_study.py [--rounds 2] [--json FILE]

The study is the digits study of issue 19: 2 pruners x 3 schedules x 2 seeds at the digits defaults (30 dense
epochs, 10 retraining). One process and ``--jobs 2`` run in separate fresh folders, alternating, ``--rounds``
times each; their wall times (median, min-max) and ratio are reported, and every run's top-1, loss and masks are
checked to be identical between the two ways. The per-unit overhead is each unit's wall time (``result.json``'s
``wall_s``) minus the pruning, training, evaluation and latency measurement it timed itself: hashing, claims,
reading its inputs and writing its outputs and results. The rerun is ``--resume`` on a finished study, timed as a whole command (Python
and torch start-up included); it must train nothing. The load average is recorded. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["--pruner", "magnitude,random", "--schedules", "FT,LRW,ALLR", "--seeds", "2", "--quiet"]
TIMED = ("time_prune_s", "time_train_s", "time_eval_s", "time_latency_s")


def _run(out: Path, *extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nptm.train", "--out", str(out), *STUDY, *extra], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"bench_study: the study failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def _results(out: Path) -> dict:
    runs = json.loads((out / "results.json").read_text())
    return {r["run"]: (r["top1"], r["loss"], r.get("sparsity")) for r in runs}


def _overheads(out: Path) -> list[float]:
    """Each unit's wall time minus what it timed itself (prune, train, evaluate)."""
    found = []
    for unit in (out / "units").iterdir():
        result = json.loads((unit / "result.json").read_text())
        own = result.get("record") or result.get("info") or {}
        found.append(result["wall_s"] - sum(own.get(k, 0.0) for k in TIMED))
    return found


def _stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    load = [os.getloadavg()[0]]
    one, jobs, overhead = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, times, extra in (("one", one, ()), ("jobs", jobs, ("--jobs", "2")))[:: 1 if r % 2 == 0 else -1]:
                out = Path(tmp) / f"{name}{r}"
                times.append(_run(out, *extra))
                overhead += _overheads(out)
                print(f"round {r + 1}: {name:4s} {times[-1]:.1f} s", flush=True)
        same = all(_results(Path(tmp) / f"jobs{r}") == _results(Path(tmp) / "one0") for r in range(args.rounds))
        finished = Path(tmp) / "one0"
        before = {q: q.stat().st_mtime_ns for q in finished.rglob("*.pt")}
        rerun = [_run(finished, "--resume") for _ in range(3)]
        untouched = before == {q: q.stat().st_mtime_ns for q in finished.rglob("*.pt")}
    load.append(os.getloadavg()[0])
    speedup = [a / b for a, b in zip(one, jobs)]
    report = {"one_process_s": _stats(one), "jobs2_s": _stats(jobs), "jobs2_speedup": _stats(speedup),
              "identical_results": same, "unit_overhead_s": _stats(overhead), "rerun_s": _stats(rerun),
              "rerun_trained_nothing": untouched, "load_average": load, "cpus": os.cpu_count()}
    print(f"one process {report['one_process_s']['median']:.1f} s, --jobs 2 {report['jobs2_s']['median']:.1f} s: "
          f"{statistics.median(speedup):.2f}x ({min(speedup):.2f}-{max(speedup):.2f}); identical results: {same}")
    print(f"per-unit overhead: median {report['unit_overhead_s']['median']:.3f} s, max "
          f"{report['unit_overhead_s']['max']:.3f} s over {len(overhead)} units")
    print(f"rerun of a finished study: median {report['rerun_s']['median']:.2f} s (min {min(rerun):.2f}), trained "
          f"nothing: {untouched}; load average {load[0]:.1f} -> {load[1]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Are the pruning-stable methods fair baselines at their defaults? Each one against GMP and BIMP within the same
total budget T and at the same sparsity, trained by the study exactly as a user runs it (no method flags).

    python benchmarks/bench_methods.py [--epochs 4,8,16] [--sparsity 0.9] [--seeds 0] [--json FILE] [-- STUDY FLAGS]

For each budget T (``--epochs``) one study runs ``--pruner gmp,<every method> --bimp`` on the bundled digits (or
the dataset and model given after ``--``; BIMP's cycles retrain T/5 epochs each) and the table prints, per method:
the top-1 after the projection onto the target, before it (the last training epoch), the sparsity the method
reached on the weights its forward used, the share of the weights' squared norm the projection removed, and the
gap to GMP at the same T. Accuracy does
not depend on the machine's load; wall times do. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study(out: Path, epochs: int, sparsity: str, seeds: str, extra: list[str]) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from nptm.pruning.sparse_training import SPARSE_TRAINING

    methods = ",".join(["gmp", *SPARSE_TRAINING.names()])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "nptm.train", "--out", str(out), "--pruner", methods, "--bimp", "--sparsity",
           sparsity, "--seeds", seeds, "--epochs", str(epochs), "--retrain-epochs", str(max(1, epochs // 5)),
           "--quiet", *extra]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"bench_methods: the study failed: {proc.stderr[-2000:]}")
    return json.loads((out / "results.json").read_text())


def pct(v):
    return None if v is None else 100 * v


def rows(records: list[dict], epochs: int) -> list[dict]:
    found = []
    for r in records:
        if r["kind"] not in ("sparse-training", "gmp", "bimp"):
            continue
        found.append({"T": epochs, "method": "BIMP" if r["kind"] == "bimp" else r["pruner"].upper(),
                      "sparsity": r["sparsity_target"], "seed": r["seed"], "top1": 100 * r["top1"],
                      "before": pct(r.get("top1_before_projection")), "reached": r.get("reached_sparsity"),
                      "change": r.get("projection_change")})
    dense = [100 * r["top1"] for r in records if r["kind"] == "dense"]
    for row in found:
        gmp = [g["top1"] for g in found if g["method"] == "GMP" and g["seed"] == row["seed"]
               and g["sparsity"] == row["sparsity"]]
        row["vs_gmp"] = row["top1"] - gmp[0] if gmp else None
        row["dense"] = dense[0] if dense else None
    return found


def table(found: list[dict]) -> str:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = ["| T | method | top-1 | vs GMP | before projection | reached | projection removed |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(found, key=lambda r: (r["T"], r["seed"], r["method"] not in ("BIMP", "GMP"), r["method"])):
        lines.append(f"| {r['T']} | {r['method']} | {fmt(r['top1'], '.1f')} | {fmt(r['vs_gmp'], '+.1f')} | "
                     f"{fmt(r['before'], '.1f')} | {fmt(r['reached'], '.3f')} | {fmt(r['change'], '.3f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", default="4,8,16", help="budgets T, comma separated")
    ap.add_argument("--sparsity", default="0.9")
    ap.add_argument("--seeds", default="0,")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in (int(e) for e in args.epochs.split(",")):
            records = study(Path(tmp) / f"T{epochs}", epochs, args.sparsity, args.seeds, extra)
            found += rows(records, epochs)
            dense = found[-1]["dense"] if found else None
            print(f"T = {epochs} epochs: dense top-1 {dense:.1f}", flush=True)
    print(table(found))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

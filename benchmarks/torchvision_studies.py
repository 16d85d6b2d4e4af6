"""Every torchvision classification model (``torchvision.models.list_models(module=torchvision.models)``) through
the study as a user runs it: ``--pruner l1_filters --sparsity 0.3``, one dense epoch and one FT retraining epoch on
a tiny generated image folder (2 classes, 4 training images each), at a small input size (``--resolution``; a model
that cannot run a forward pass at that size gets 224). The studies run one after another in this process.

    nice -n 10 python benchmarks/torchvision_studies.py [--resolution 32] [--max-params 150e6] [--json FILE]

Each model ends as: ``ran`` (exit 0, a pruned run in results.json), ``refused`` (exit 2 with one line saying why),
``failed`` (anything else: a traceback, another status), or ``skipped`` (more parameters than
``--max-params``, too big for the machine's memory with three copies for SGD). Counts and each model's line are
printed; nothing is asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]


def _probe(name: str, resolution: int, max_params: float) -> tuple[int, int | None]:
    """(parameters, input size): ``resolution`` if a forward pass works there, else 224 if it does, else None;
    not tried for a model over ``max_params``."""
    import torch
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=2).eval()
    params = sum(p.numel() for p in model.parameters())
    for size in (resolution, 224) if params <= max_params else ():
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return params, size
        except Exception:  # noqa: BLE001  (too small an input raises many types)
            continue
    return params, None


def run_model(name: str, data: Path, out: Path, size: int) -> tuple[str, str, float]:
    """(outcome, what it said, seconds) of one model's study at input ``size``, run in this process."""
    from nptm.study.cli import main

    args = ["--dataset", "imagefolder", "--data-dir", str(data), "--model", name, "--pruner", "l1_filters",
            "--sparsity", "0.3", "--epochs", "1", "--retrain-epochs", "1", "--schedules", "FT", "--seeds", "0,",
            "--train-resolution", str(size), "--val-resolution", str(size), "--batch-size", "4", "--workers", "0",
            "--threads", "1", "--quiet", "--out", str(out)]
    err, start = io.StringIO(), time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(args)
    except Exception as e:  # noqa: BLE001  (a traceback: the study failed)
        return "failed", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}", time.perf_counter() - start
    seconds = time.perf_counter() - start
    said = [line for line in err.getvalue().splitlines() if line.startswith("nptm.train: error")]
    if status == 0:
        runs = json.loads((out / "results.json").read_text())
        return ("ran" if any(r["kind"] != "dense" for r in runs) else "failed"), f"input {size}", seconds
    if status == 2 and len(said) == 1:
        return "refused", said[0], seconds
    return "failed", f"status {status}: {(err.getvalue().strip().splitlines() or [''])[-1]}", seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--max-params", type=float, default=150e6)
    p.add_argument("--models", help="comma-separated names (default: every classification model)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torchvision
    from fakedata import make_image_folder

    names = args.models.split(",") if args.models else torchvision.models.list_models(module=torchvision.models)
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_image_folder(data / "train", classes=2, per_class=4, max_side=40, min_side=32, seed=1)
        make_image_folder(data / "val", classes=2, per_class=2, max_side=40, min_side=32, seed=2)
        for name in names:
            params, size = _probe(name, args.resolution, args.max_params)
            if params > args.max_params:
                outcome, said, seconds = "skipped", f"{params / 1e6:.0f}M parameters", 0.0
            else:
                outcome, said, seconds = run_model(name, data, Path(tmp) / name, size or args.resolution)
            found[name] = {"outcome": outcome, "said": said, "seconds": round(seconds, 1), "params": params}
            print(f"{name:28s} {outcome:8s} {seconds:6.1f} s  {said}", flush=True)
    counts = {k: sum(v["outcome"] == k for v in found.values()) for k in ("ran", "refused", "failed", "skipped")}
    print(f"{len(found)} models: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "models": found, "load": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

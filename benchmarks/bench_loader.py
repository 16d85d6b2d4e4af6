"""End-to-end training throughput per data loader, on the CPU (or the GPU), on generated data.

    python benchmarks/bench_loader.py [--workload cifar|imagenet|both] [--rounds 3] [--json FILE]
    python -m pytest benchmarks/bench_loader.py --benchmark-only

Two workloads, each read by every loader nptm has for it, through nptm's own ``Trainer`` (SGD
Nesterov, batch 64, the study's augmentation):

- cifar: 32x32 images (ResNet-20, pad-4 crop + flip): the python files in memory (``TensorLoader``,
  augmentation by torch), a raw ``.beton`` decoded once into that same in-memory path (what ``--loader
  auto`` does with CIFAR .beton files), and the .beton streamed through FFCV's pipeline (``--loader ffcv``);
- imagenet: JPEGs with sides 250-500 (ResNet-18, random-resized crop to 224 + flip): torchvision+PIL
  in DataLoader worker processes against FFCV from a ffcv-imagenet style ``.beton`` (half JPEG).

Per loader: ``load`` is the loader alone (every batch produced and dropped), ``train`` the training
loop fed by it, both in images/s over whole epochs after one warm-up epoch (FFCV compiles its
pipeline there), the loaders timed round-robin over ``--rounds`` rounds in one process (median and
min-max). ``auto`` names what ``--loader auto`` picks on this device. The load average, CPU and thread
counts are recorded. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "tests", "data")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from nptm.data import DataConfig, build_dataset  # noqa: E402
from nptm.data.loaders import choose_loader, ffcv_available  # noqa: E402

BATCH = 64
WORKLOADS = {  # name: (dataset, model, images, test images, loader names)
    "cifar": ("cifar10", "resnet20", 2048, 64, ("in-memory", "beton in memory", "ffcv")),
    "imagenet": ("imagefolder", "resnet18", 192, 8, ("torchvision+PIL", "ffcv")),
}
LOADER_FLAG = {"in-memory": "torchvision", "torchvision+PIL": "torchvision", "ffcv": "ffcv", "beton in memory": "auto"}


def make_data(workload: str, root: Path, workers: int, images: int | None = None) -> Path:
    """The generated dataset in both layouts (python files or image folders, and .beton files)."""
    from fakedata import make_cifar_folder, make_image_folder
    from nptm.data.write import convert

    dataset, _, n, n_test, _ = WORKLOADS[workload]
    n = images or n
    if workload == "cifar":
        make_cifar_folder(root, "cifar10", n_train=n, n_test=n_test)
        splits = {"train": f"cifar10:{root}", "test": f"cifar10:{root}"}
        names = {"train": "train.beton", "test": "test.beton"}
    else:
        make_image_folder(root / "train", classes=4, per_class=n // 4, max_side=500, min_side=250)
        make_image_folder(root / "val", classes=4, per_class=n_test // 4, max_side=500, min_side=250, seed=1)
        splits = {"train": f"imagefolder:{root / 'train'}", "val": f"imagefolder:{root / 'val'}"}
        names = {"train": "train.beton", "val": "val.beton"}
    if ffcv_available():
        for split, source in splits.items():
            convert(source, root / names[split], split=split if workload == "cifar" else "train", workers=workers)
    return root


def data_config(workload: str, root: Path, loader: str, workers: int, device: str) -> DataConfig:
    dataset = WORKLOADS[workload][0]
    return DataConfig(name=dataset, data_dir=str(root), batch_size=BATCH, workers=workers, device=device,
                      loader=LOADER_FLAG[loader], channels_last=device == "cuda",
                      train_resolution=224 if workload == "imagenet" else None,
                      val_resolution=224 if workload == "imagenet" else None)


def auto_choice(workload: str, root: Path, device: str) -> str:
    """What ``--loader auto`` takes for this workload on ``device`` (its note on stderr silenced)."""
    folders = ("cifar-10-batches-py",) if workload == "cifar" else ("train", "val")
    betons = ("train.beton", "test.beton") if workload == "cifar" else ("train.beton", "val.beton")
    with open(os.devnull, "w") as null:
        stderr, sys.stderr = sys.stderr, null
        try:
            backend = choose_loader("auto", root, betons, folders, workload, device=device,
                                    kind="small" if workload == "cifar" else "images")
        finally:
            sys.stderr = stderr
    return {"ffcv": "ffcv", "memory": "beton in memory"}.get(backend, WORKLOADS[workload][4][0])


class Run:
    """One loader of one workload: its data spec and a Trainer over it, epochs run on demand."""

    def __init__(self, workload: str, root: Path, loader: str, workers: int, device: str):
        from nptm.models import build_model
        from nptm.schedules import Schedule
        from nptm.train.loop import Trainer

        self.spec = build_dataset(data_config(workload, root, loader, workers, device))
        torch.manual_seed(0)
        model = build_model(WORKLOADS[workload][1], self.spec.num_classes).to(device)
        if device == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.trainer = Trainer(model, self.spec.train, Schedule("const", 10**9, lambda it: 0.01), epochs=0,
                               device=device)
        self.epoch = 0

    def load_epoch(self) -> float:
        """Images/s of one pass of the loader alone."""
        self.spec.train.set_epoch(self.epoch)
        self.epoch += 1
        start, n = time.perf_counter(), 0
        for x, _ in self.spec.train:
            n += len(x)
        return n / (time.perf_counter() - start)

    def train_epoch(self) -> float:
        """Images/s of one training epoch (Trainer's own count and clock)."""
        t = self.trainer
        images, seconds = t.images, t.train_time
        t.epochs += 1
        t.fit()
        return (t.images - images) / (t.train_time - seconds)


def measure(workload: str, root: Path, workers: int, device: str, rounds: int) -> list[dict]:
    loaders = [n for n in WORKLOADS[workload][4] if LOADER_FLAG[n] == "torchvision" or ffcv_available()]
    runs = {n: Run(workload, root, n, workers, device) for n in loaders}
    for r in runs.values():  # warm-up: numba compilation, page cache, allocator
        r.load_epoch()
        r.train_epoch()
    rates: dict[tuple[str, str], list[float]] = {(n, k): [] for n in loaders for k in ("load", "train")}
    for _ in range(rounds):  # round-robin, so drifting load hits every loader alike
        for n, r in runs.items():
            rates[(n, "load")].append(r.load_epoch())
            rates[(n, "train")].append(r.train_epoch())
    auto = auto_choice(workload, root, device)
    return [{"workload": workload, "loader": n, "what": k, "images_per_s": statistics.median(v),
             "min": min(v), "max": max(v), "rounds": rounds, "auto": n == auto}
            for (n, k), v in rates.items()]


def machine(device: str, workers: int) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"device": device, "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "workers": workers, "load_avg": os.getloadavg()[0], "torch": torch.__version__}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    p.add_argument("--workers", type=int, default=2, help="loader workers (DataLoader processes, FFCV threads)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=None, help="training images per workload (default: cifar 2048, "
                                                              "imagenet 192)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine(args.device, args.workers)
    records = []
    for workload in WORKLOADS if args.workload == "both" else [args.workload]:
        with tempfile.TemporaryDirectory() as tmp:
            root = make_data(workload, Path(tmp), args.workers, args.images)
            records += measure(workload, root, args.workers, args.device, args.rounds)
    info["load_avg_end"] = os.getloadavg()[0]
    print(f"{info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads, {args.workers} workers, "
          f"load {info['load_avg']:.1f} -> {info['load_avg_end']:.1f}; images/s, median (min-max) of {args.rounds}")
    for r in records:
        print(f"  {r['workload']:9s} {r['loader']:16s} {r['what']:5s} {r['images_per_s']:8.1f} "
              f"({r['min']:.1f}-{r['max']:.1f}){'   <- auto' if r['auto'] and r['what'] == 'train' else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "records": records}, indent=1))
    return records


# pytest-benchmark: one training epoch of the CIFAR-size workload per round, per loader.
def _bench(benchmark, tmp_path_factory, loader):
    import pytest

    if loader == "ffcv":
        pytest.importorskip("ffcv")
    root = tmp_path_factory.getbasetemp() / "bench_loader_cifar"
    if not root.exists():
        make_data("cifar", root, 2)
    run = Run("cifar", root, loader, 2, "cpu")
    run.train_epoch()
    benchmark.pedantic(run.train_epoch, rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = run.trainer.images / run.trainer.train_time


def test_train_cifar_ffcv(benchmark, tmp_path_factory):
    _bench(benchmark, tmp_path_factory, "ffcv")


def test_train_cifar_in_memory(benchmark, tmp_path_factory):
    _bench(benchmark, tmp_path_factory, "in-memory")


if __name__ == "__main__":
    main()

"""ImageNet-style loading throughput: FFCV vs the torchvision+PIL fallback, on the same generated JPEGs.

    python benchmarks/bench_loader.py [--images 256] [--workers 2] [--epochs 3]
    python -m pytest benchmarks/bench_loader.py --benchmark-only

Both decode and random-resized-crop to 224 px with a horizontal flip and normalise on the CPU into
channels_last float32 batches (batch 64, ``workers`` each: numba threads for FFCV, DataLoader
processes for torchvision). The .beton follows the ffcv-imagenet recipe (max side 500, JPEG quality
90, half the images stored as JPEG, half raw); 'ffcv all-JPEG' stores every image as JPEG, so it
decodes as much as torchvision.
images/s counts whole epochs after one warm-up epoch (FFCV compiles its pipeline in the first).
Goal: FFCV >= 1.5x the fallback. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from nptm.data.registry import DataConfig  # noqa: E402

RES, BATCH, CLASSES = 224, 64, 4


def make_jpegs(root: Path, n: int, max_side: int = 500, seed: int = 0) -> Path:
    """``n`` photo-like JPEGs (smooth shapes + sensor-like noise, quality 90), sides in [max_side/2, max_side]."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(max_side // 2, max_side + 1, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        img = np.clip(np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        folder = root / f"class_{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def loaders(root: Path, workers: int) -> dict:
    """name -> zero-argument factory of an EpochLoader over the JPEGs in ``root/train``."""
    from nptm.data.imagefolder import imagefolder_train_loader

    cfg = DataConfig(name="imagenet", data_dir=str(root), batch_size=BATCH, workers=workers, device="cpu",
                     channels_last=True)
    out = {"torchvision+PIL": lambda: imagefolder_train_loader(root / "train", cfg, resolution=RES)}
    try:
        from nptm.data import ffcv_pipelines as fp
        from nptm.data.write import convert
    except ImportError:
        return out
    for name, p in (("ffcv", 0.5), ("ffcv all-JPEG", 1.0)):
        beton = root / f"train_p{p}.beton"
        if not beton.exists():
            convert(f"imagefolder:{root / 'train'}", beton, max_resolution=500, jpeg_quality=90,
                    compress_probability=p, workers=workers)
        out[name] = lambda beton=beton: fp.imagenet_train_loader(beton, cfg, resolution=RES)
    return out


def run_epochs(loader, epochs: int) -> int:
    n = 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, _ in loader:
            n += len(x)
    return n


def images_per_s(loader, epochs: int) -> float:
    run_epochs(loader, 1)  # warm-up: numba compilation, page cache
    t = time.perf_counter()
    n = run_epochs(loader, epochs)
    return n / (time.perf_counter() - t)


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_jpegs(root / "train", args.images)
        rates = {name: images_per_s(make(), args.epochs) for name, make in loaders(root, args.workers).items()}
    base = rates["torchvision+PIL"]
    print(f"{args.images} JPEGs (max side 500), random-resized-crop {RES} + flip + normalise, batch {BATCH}, "
          f"{args.workers} workers, {os.cpu_count()} CPUs")
    for name, r in rates.items():
        print(f"  {name:18s} {r:8.1f} images/s   {r / base:5.2f}x")
    if "ffcv" not in rates:
        print("  ffcv is not installed: no FFCV numbers")
    return rates


# pytest-benchmark: one epoch over the same data per round.
def _bench(benchmark, tmp_path_factory, name):
    import pytest

    if name.startswith("ffcv"):
        pytest.importorskip("ffcv")
    root = tmp_path_factory.getbasetemp() / "bench_loader"
    if not (root / "train").exists():
        make_jpegs(root / "train", 256)
    loader = loaders(root, 2)[name]()
    run_epochs(loader, 1)
    n = benchmark.pedantic(run_epochs, args=(loader, 1), rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.median


def test_loader_ffcv(benchmark, tmp_path_factory):
    _bench(benchmark, tmp_path_factory, "ffcv")


def test_loader_torchvision(benchmark, tmp_path_factory):
    _bench(benchmark, tmp_path_factory, "torchvision+PIL")


if __name__ == "__main__":
    main()

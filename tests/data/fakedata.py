"""Small generated datasets in the on-disk layouts nptm reads (shared by tests/data and benchmarks)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(rng: np.random.Generator, h: int, w: int, label: int) -> np.ndarray:
    """H,W,3 uint8: a random low-frequency pattern whose channel ``label % 3`` is clearly brightest."""
    coarse = rng.uniform(0, 90, (4, 4, 3))
    coarse[..., label % 3] += 150
    img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(img)


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, max_side: int = 500, min_side: int = 64,
                      seed: int = 0) -> list[tuple[Path, int]]:
    """One sub-folder of JPEGs per class (class_0, class_1, ...); returns (path, label) in ImageFolder order."""
    rng = np.random.default_rng(seed)
    samples = []
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
            path = folder / f"img_{i:03d}.jpg"
            Image.fromarray(smooth_image(rng, h, w, c)).save(path, quality=95)
            samples.append((path, c))
    return sorted(samples)


def add_corrupt_images(root: Path) -> list[Path]:
    """A truncated JPEG (valid header) and a non-image file named .jpg, in the first class folder."""
    folder = sorted(p for p in root.iterdir() if p.is_dir())[0]
    good = sorted(folder.glob("*.jpg"))[0].read_bytes()
    truncated, garbage = folder / "zz_truncated.jpg", folder / "zz_garbage.jpg"
    truncated.write_bytes(good[: len(good) // 3])
    garbage.write_bytes(b"definitely not a JPEG" * 10)
    return [truncated, garbage]


def make_cifar_folder(data_dir: Path, kind: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0):
    """The python-pickle layout (bytes keys, as the real files); returns uint8 N,3,32,32 arrays and labels."""
    from nptm.data.cifar import LAYOUTS

    folder_name, train_files, test_files, label_key, classes, _ = LAYOUTS[kind]
    folder = data_dir / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, files, n in (("train", train_files, n_train), ("test", test_files, n_test)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % classes)
        for part, idx in zip(files, np.array_split(np.arange(n), len(files))):
            with open(folder / part, "wb") as f:
                pickle.dump({b"data": x[idx].reshape(len(idx), -1), label_key.encode(): y[idx].tolist()}, f)
        out[split] = (x, y)
    return out

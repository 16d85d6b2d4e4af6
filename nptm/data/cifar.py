"""CIFAR-10/100 from the standard python pickles (uint8 in device memory, augmented on the device), or
from ``train.beton`` + ``test.beton`` through FFCV.

``--data-dir DIR`` holds ``cifar-10-batches-py/`` (``cifar-100-python/``) and/or the two .beton files
(``python -m nptm.data write --source cifar10:DIR --split train|test``). ``DataConfig.loader``: ``auto``
takes the .beton files when both exist and ffcv imports, ``ffcv`` insists on them, ``torchvision`` (the
name shared with ImageNet's fallback) reads the python files.
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nptm.data.digits import TensorLoader
from nptm.data.registry import DataConfig, DataError, DataSpec, register_dataset

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4

LAYOUTS = {  # name: (folder, train files, test files, label key, classes, download url)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10,
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100,
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Loads only plain containers and numpy arrays: a CIFAR pickle needs nothing else."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        images = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"malformed CIFAR file {path}: {type(e).__name__}: {e}") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise DataError(f"malformed CIFAR file {path}: data {images.shape}, {len(labels)} labels "
                        f"(expected N x 3072 and N labels)")
    return images.reshape(-1, 3, 32, 32), labels


def load_cifar(name: str, data_dir: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train uint8 N,3,32,32, train labels, test images, test labels) on the CPU."""
    folder, train_files, test_files, label_key, classes, url = LAYOUTS[name]
    if not data_dir:
        raise DataError(f"{name} needs --data-dir (a folder containing {folder}/)")
    root = Path(data_dir).expanduser() / folder
    missing = [f for f in train_files + test_files if not (root / f).is_file()]
    if missing:
        raise DataError(f"{name} not found: {root} lacks {', '.join(missing)} (extract {url} into {data_dir})")

    def read(files):
        parts = [_read_batch(root / f, label_key) for f in files]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if y.min() < 0 or y.max() >= classes:
            raise DataError(f"malformed {name} data in {root}: labels outside [0, {classes})")
        return torch.from_numpy(x), torch.from_numpy(y)

    return (*read(train_files), *read(test_files))


def _normalizer(device):
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    return lambda x: (x.float() - mean) / std


def augment_batch(x: Tensor, generator: torch.Generator, share: tuple[int, int, int] | None = None) -> Tensor:
    """Pad-4 (zeros) random 32x32 crop and random horizontal flip of a uint8 N,C,H,W batch.

    ``share=(r, w, total)``: x holds rows r, r+w, ... of a ``total``-sample batch split over ranks; the
    random draws are made for all ``total`` rows and sliced, so the ranks together augment exactly
    as one process augments the whole batch."""
    n, _, h, w = x.shape
    start, step, total = share or (0, 1, n)
    pick = slice(start, None, step)
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (total, 1), device=x.device, generator=generator)[pick]
    dx = torch.randint(0, 2 * PAD + 1, (total, 1), device=x.device, generator=generator)[pick]
    rows = dy + torch.arange(h, device=x.device)
    cols = dx + torch.arange(w, device=x.device)
    flip = (torch.rand(total, 1, device=x.device, generator=generator) < 0.5)[pick]
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # N,H,W,C -> N,C,H,W


BETONS = ("train.beton", "test.beton")


def build_cifar(cfg: DataConfig) -> DataSpec:
    from nptm.data.imagenet import LOADERS, cifar_beton_spec, ffcv_import_error

    if cfg.loader not in LOADERS:
        raise DataError(f"unknown loader {cfg.loader!r}; choose from {', '.join(LOADERS)}")
    folder = LAYOUTS[cfg.name][0]
    if not cfg.data_dir:
        raise DataError(f"{cfg.name} needs --data-dir (a folder containing {folder}/ or {' and '.join(BETONS)})")
    root = Path(cfg.data_dir).expanduser()
    has_betons, has_folder = all((root / n).is_file() for n in BETONS), (root / folder).is_dir()
    if cfg.loader == "ffcv" or (cfg.loader == "auto" and has_betons):
        if cfg.loader == "ffcv" or not ffcv_import_error() or not has_folder:
            return cifar_beton_spec(cfg)  # clear errors for missing files or a missing ffcv
        print(f"nptm: ffcv is not importable ({ffcv_import_error()}); reading {root / folder} instead of "
              f"the .beton files", file=sys.stderr)
    elif not has_folder and cfg.loader == "auto":
        try:
            load_cifar(cfg.name, cfg.data_dir)  # raises: the files are not there
        except DataError as e:
            raise DataError(f"{e}; or put {' and '.join(BETONS)} in {root} (python -m nptm.data write --source "
                            f"{cfg.name}:DIR --split train|test)") from None
    return build_cifar_python(cfg)


def build_cifar_python(cfg: DataConfig) -> DataSpec:
    x_tr, y_tr, x_te, y_te = load_cifar(cfg.name, cfg.data_dir)
    dev = cfg.device
    norm = _normalizer(dev)
    common = dict(rank=cfg.rank, world_size=cfg.world_size, channels_last=cfg.channels_last)
    train = TensorLoader(x_tr.to(dev), y_tr.to(dev), cfg.batch_size, shuffle=True, seed=cfg.seed,
                         transform=lambda x, g, share=None: norm(augment_batch(x, g, share)), **common)
    test = TensorLoader(x_te.to(dev), y_te.to(dev), 1000, shuffle=False,
                        transform=lambda x, g, share=None: norm(x), **common)
    return DataSpec(train=train, test=test, num_classes=LAYOUTS[cfg.name][4], in_channels=3, image_size=32,
                    train_examples=len(y_tr))


for _name in LAYOUTS:
    register_dataset(_name)(build_cifar)

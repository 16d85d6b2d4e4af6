"""CIFAR-10/100 from the standard python pickles (uint8 in device memory, augmented on the device), or
from ``train.beton`` + ``test.beton`` through FFCV.

``--data-dir DIR`` holds ``cifar-10-batches-py/`` (``cifar-100-python/``) and/or the two .beton files
(``python -m nptm.data write --source cifar10:DIR --split train|test``). ``DataConfig.loader``: ``auto``
takes the .beton files when both exist and ffcv imports (decoded once into memory where that is faster,
``nptm.data.loaders.choose``), ``ffcv`` streams them through FFCV's pipeline, ``torchvision`` (the name
shared with the image folders' fallback) reads the python files.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nptm.data.constants import CIFAR_MEAN, CIFAR_STD
from nptm.data.loaders.choose import choose_loader
from nptm.data.loaders.tensor import TensorLoader
from nptm.data.registry import DataConfig, DataError, DataSpec, register_dataset
from nptm.data.transforms import DeviceNormalize, augment_batch

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


BETONS = ("train.beton", "test.beton")
CIFAR_DEFAULTS = dict(model="resnet56", epochs=160, retrain_epochs=40, batch_size=64, lr=0.1, milestones=(0.5, 0.75),
                      latency_batches=(1, 64))


def build_cifar(cfg: DataConfig) -> DataSpec:
    folder = LAYOUTS[cfg.name][0]
    if not cfg.data_dir:
        raise DataError(f"{cfg.name} needs --data-dir (a folder containing {folder}/ or {' and '.join(BETONS)})")
    root = Path(cfg.data_dir).expanduser()
    if root.name == folder and not (root / folder).is_dir():
        raise DataError(f"--data-dir {cfg.data_dir} is the {folder} folder itself; pass its parent, "
                        f"--data-dir {root.parent}")
    if cfg.loader == "auto" and not (root / folder).is_dir() and not all((root / n).is_file() for n in BETONS):
        try:
            load_cifar(cfg.name, cfg.data_dir)  # raises: the files are not there
        except DataError as e:
            raise DataError(f"{e}; or put {' and '.join(BETONS)} in {root} (python -m nptm.data write --source "
                            f"{cfg.name}:DIR --split train|test)") from None
    backend = choose_loader(cfg.loader, root, BETONS, (folder,), cfg.name, device=cfg.device, kind="small",
                            fallback=f"the in-memory loader of {root / folder}", announce_missing=False)
    if backend == "memory":
        from nptm.data.loaders.beton_memory import read_beton_images

        train, test = (read_beton_images(root / n) for n in BETONS)
        if train is not None and test is not None and train[0].shape[1:] == (3, 32, 32) == test[0].shape[1:]:
            return cifar_in_memory(cfg, *train, *test)
    return cifar_beton_spec(cfg) if backend in ("ffcv", "memory") else cifar_in_memory(cfg, *load_cifar(cfg.name, cfg.data_dir))


def cifar_in_memory(cfg: DataConfig, x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor) -> DataSpec:
    """uint8 images held on the device, augmented and normalised there (TensorLoader)."""
    dev = cfg.device
    norm = DeviceNormalize(CIFAR_MEAN, CIFAR_STD, dev)
    common = dict(rank=cfg.rank, world_size=cfg.world_size, channels_last=cfg.channels_last)
    train = TensorLoader(x_tr.to(dev), y_tr.to(dev), cfg.batch_size, shuffle=True, seed=cfg.seed,
                         transform=lambda x, g, share=None: norm(augment_batch(x, g, share)), **common)
    test = TensorLoader(x_te.to(dev), y_te.to(dev), 1000, shuffle=False,
                        transform=lambda x, g, share=None: norm(x), **common)
    return DataSpec(train=train, test=test, num_classes=LAYOUTS[cfg.name][4], in_channels=3, image_size=32,
                    train_examples=len(y_tr))


def cifar_beton_spec(cfg: DataConfig, dtype: torch.dtype = torch.float32) -> DataSpec:
    """CIFAR-10/100 from ``DATA_DIR/train.beton`` and ``DATA_DIR/test.beton`` through FFCV."""
    from nptm.data.loaders import ffcv_loader as fl

    root = Path(cfg.data_dir).expanduser()
    n_train, _ = fl.beton_info(root / "train.beton")
    train = fl.cifar_train_loader(root / "train.beton", cfg, mean=CIFAR_MEAN, std=CIFAR_STD, dtype=dtype)
    test = fl.cifar_test_loader(root / "test.beton", cfg, mean=CIFAR_MEAN, std=CIFAR_STD, dtype=dtype)
    return DataSpec(train=train, test=test, num_classes=LAYOUTS[cfg.name][4], in_channels=3, image_size=32,
                    train_examples=n_train)


def cifar_source(name: str, path: Path | None, split: str, workers: int = 1):
    """The python pickles of ``name`` at ``path`` (holding or being its folder) for ``python -m nptm.data write``."""
    from nptm.data.sources import ArrayImages, Source

    if path is None:
        raise DataError(f"source {name!r} needs a path: {name}:PATH")
    if split not in ("train", "test"):
        raise DataError(f"{name} split must be train or test, not {split!r}")
    folder = LAYOUTS[name][0]
    data_dir = path.parent if path.name == folder and not (path / folder).is_dir() else path
    x_tr, y_tr, x_te, y_te = load_cifar(name, str(data_dir))
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    images = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # N,3,32,32 -> N,32,32,3
    return Source(ArrayImages(images, y.numpy()), LAYOUTS[name][4], f"{name} {split} ({data_dir / folder})"), []


for _name in LAYOUTS:
    register_dataset(_name, defaults=CIFAR_DEFAULTS, loaders=True, source=cifar_source)(build_cifar)

"""Dataset registry: a name maps to a builder turning a DataConfig into a DataSpec."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import torch


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: str | None = None
    batch_size: int = 64
    workers: int = 2
    device: str = "cpu"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    loader: str = "auto"  # auto | ffcv | torchvision
    channels_last: bool = False
    # ImageNet-style datasets only (None: the dataset's default)
    train_resolution: int | None = None
    val_resolution: int | None = None
    progressive_resize: Any = None  # a nptm.data.imagenet.ProgressiveResize


class EpochLoader(Protocol):
    """Yields (inputs, labels) batches already on the configured device."""

    def __iter__(self): ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None:
        """Deterministic shuffling per (seed, epoch), so a resumed run sees the same batches."""


@dataclass
class DataSpec:
    train: EpochLoader
    test: Iterable[tuple[torch.Tensor, torch.Tensor]]
    num_classes: int
    in_channels: int
    image_size: int
    train_examples: int


class DataError(ValueError):
    """Missing or malformed data; the CLI turns it into one line and exit status 2."""


DATASETS: dict[str, Callable[[DataConfig], DataSpec]] = {}


def register_dataset(name: str):
    def wrap(fn: Callable[[DataConfig], DataSpec]):
        DATASETS[name] = fn
        return fn

    return wrap


def build_dataset(cfg: DataConfig) -> DataSpec:
    if cfg.name not in DATASETS:
        raise DataError(f"unknown dataset {cfg.name!r}; choose from {', '.join(sorted(DATASETS))}")
    return DATASETS[cfg.name](cfg)

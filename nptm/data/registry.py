"""Dataset registry: a name maps to a ``Dataset`` (a builder turning a DataConfig into a DataSpec, the study
defaults that go with the data, how it is written to .beton). A dataset file in this package registers itself
with ``register_dataset`` and is discovered; third-party ones come through the ``nptm.datasets`` entry points."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch

from nptm.utils.errors import UserError
from nptm.utils.registry import Registry, UnknownChoice


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
    # image-folder datasets only (None: the dataset's default)
    train_resolution: int | None = None
    val_resolution: int | None = None
    progressive_resize: Any = None  # a nptm.data.transforms.ProgressiveResize


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


class DataError(UserError):
    """Missing or malformed data; the CLI turns it into one line and exit status 2."""


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its builder, the study defaults it carries (model, epochs, retrain_epochs,
    batch_size, lr, milestones, ... for the fields a study leaves unset), whether ``--loader`` applies
    (files in several formats), whether the resolution options apply (images of any size), and how to read it
    for ``python -m nptm.data write`` (``source(name, path, split, workers) -> (nptm.data.sources.Source,
    [(path, error) of unreadable images]); None: it cannot be written). ``imports``: the modules its builder imports
    on first use, which the server that forks ``--jobs`` workers imports once for all of them."""

    build: Callable[[DataConfig], DataSpec]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    loaders: bool = False
    resolutions: bool = False
    source: Callable[..., tuple[Any, list]] | None = None  # (name, path, split, workers) -> what .beton files hold
    imports: tuple[str, ...] = ()


DATASETS: Registry[Dataset] = Registry("dataset", "nptm.datasets", package="nptm.data")


def register_dataset(name: str, *, defaults: Mapping[str, Any] | None = None, loaders: bool = False,
                     resolutions: bool = False, source: Callable[..., tuple[Any, list]] | None = None,
                     imports: tuple[str, ...] = ()):
    """``@register_dataset("name", defaults={...})`` above a ``DataConfig -> DataSpec`` builder."""
    def wrap(fn: Callable[[DataConfig], DataSpec]):
        DATASETS.register(name, Dataset(fn, dict(defaults or {}), loaders, resolutions, source, tuple(imports)))
        return fn

    return wrap


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except UnknownChoice as e:
        raise DataError(str(e)) from None


def build_dataset(cfg: DataConfig) -> DataSpec:
    return get_dataset(cfg.name).build(cfg)

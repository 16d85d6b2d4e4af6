"""FFCV loaders for ImageNet-style and CIFAR ``.beton`` files, exposed as EpochLoaders.

Pipelines follow two FFCV rules: on the CPU every numba op (decoder, flip, translate,
NormalizeImage) comes before ``ToTensor`` (a numba op after a torch op hangs ``Loader()``); on the
GPU the images travel as uint8 and are normalised by torch on the device (FFCV's GPU
``NormalizeImage`` needs cupy).
"""
from __future__ import annotations

import numpy as np
import torch

from nptm.data.loaders.choose import ffcv_import_error

ffcv_import_error()  # the first import of ffcv, keeping torch's thread count (see there)
from ffcv.fields.decoders import (CenterCropRGBImageDecoder, IntDecoder,  # noqa: E402
                                  RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder)
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.reader import Reader  # noqa: E402
from ffcv.transforms import (NormalizeImage, RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice,  # noqa: E402
                             ToTensor, ToTorchImage)
from ffcv.traversal_order.base import TraversalOrder  # noqa: E402

from nptm.data.constants import CIFAR_PAD, DEFAULT_CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from nptm.data.registry import DataConfig, DataError  # noqa: E402
from nptm.data.transforms import DeviceNormalize, ProgressiveResize  # noqa: E402
from nptm.utils.seeding import mix_seed  # noqa: E402

# random: full shuffle, file read through the OS page cache (data set fits in RAM, ffcv-imagenet's
# in_memory=1); quasi_random: page-local shuffle through a process cache (data set larger than RAM).
ORDERS = ("random", "quasi_random")


def beton_info(path: str) -> tuple[int, int]:
    """(number of samples, number of classes = largest label + 1) of a .beton with a 'label' field."""
    try:
        reader = Reader(str(path))
        labels = reader.metadata[f"f{reader.field_names.index('label')}"]  # metadata columns are f0, f1, ...
    except (OSError, ValueError, KeyError, AssertionError) as e:
        raise DataError(f"unreadable .beton file {path}: {type(e).__name__}: {e}") from None
    return int(reader.num_samples), int(labels.max()) + 1 if len(labels) else 0


class _SeededShardOrder(TraversalOrder):
    """Shuffle per (seed, stream, epoch); rank r of w takes every w-th sample (padded like DistributedSampler)."""

    rank, world_size, stream = 0, 1, 0

    def sample_order(self, epoch: int):
        rng = np.random.default_rng(mix_seed(self.seed, self.stream, epoch))
        order = rng.permutation(self.indices)
        if self.world_size > 1:
            total = -(-len(order) // self.world_size) * self.world_size
            order = np.resize(order, total)[self.rank :: self.world_size]
        return order


class FFCVLoader:
    """EpochLoader over an ffcv Loader: ``(x, y)`` batches on ``cfg.device``, y int64.

    ``set_epoch(e)`` fixes the shuffle of the next pass (deterministic in seed, stream, epoch) and,
    with ``resize``, the progressive training resolution. Images are views of FFCV's ring buffers
    (``batches_ahead + 2`` deep): consume or clone them before asking for that many more batches.
    """

    def __init__(self, path, cfg: DataConfig, image_ops: list, *, train: bool, mean, std,
                 dtype: torch.dtype = torch.float32, order: str = "random",
                 resize: ProgressiveResize | None = None, decoder=None, batch_size: int | None = None):
        if order not in ORDERS:
            raise DataError(f"unknown FFCV order {order!r}; choose from {', '.join(ORDERS)}")
        self.device = torch.device(cfg.device)
        self.dtype, self.resize, self.decoder = dtype, resize, decoder
        self.seed, self.stream, self.epoch = cfg.seed, 0, 0
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            tail = [ToTensor(), ToDevice(self.device, non_blocking=True), ToTorchImage(channels_last=cfg.channels_last)]
            self.normalize = DeviceNormalize(mean, std, self.device, dtype)
        else:
            mean255, std255 = np.array(mean) * 255, np.array(std) * 255
            # channels_last is a free view of the decoded N,H,W,C batch; NCHW is made in __iter__ (one copy)
            tail = [NormalizeImage(mean255, std255, np.float32), ToTensor(), ToTorchImage(channels_last=True)]
            self.normalize = None
        self.channels_last = cfg.channels_last
        labels = [IntDecoder(), ToTensor(), Squeeze(1)] + ([ToDevice(self.device, non_blocking=True)] if on_gpu else [])

        n_samples, _ = beton_info(path)
        indices = None
        sharded_statically = cfg.world_size > 1 and (not train or order == "quasi_random")
        if sharded_statically:  # evaluation, or quasi-random (page-local) training: a fixed disjoint share per rank
            indices = np.arange(n_samples)[cfg.rank :: cfg.world_size]
        ffcv_order = {"random": OrderOption.SEQUENTIAL, "quasi_random": OrderOption.QUASI_RANDOM}[order]
        torch_threads = torch.get_num_threads()  # ffcv sets torch's thread count to its own: restore it
        self.loader = Loader(str(path), batch_size=batch_size or cfg.batch_size, num_workers=max(1, cfg.workers),
                             order=ffcv_order if train else OrderOption.SEQUENTIAL, indices=indices,
                             seed=cfg.seed, drop_last=train, os_cache=not (train and order == "quasi_random"),
                             pipelines={"image": [*image_ops, *tail], "label": labels})
        if train and order == "random":  # ffcv cannot take a TraversalOrder class: swap ours in
            shard_order = _SeededShardOrder(self.loader)
            if not sharded_statically:
                shard_order.rank, shard_order.world_size = cfg.rank, cfg.world_size
            self.loader.traversal_order = shard_order
            self.loader.first_traversal_order = shard_order.sample_order(0)
        self._shard_order = self.loader.traversal_order if train and order == "random" else None
        self.set_epoch(0)
        torch.set_num_threads(torch_threads)

    def set_epoch(self, epoch: int, stream: int = 0) -> None:
        self.epoch, self.stream = epoch, stream
        if self._shard_order is not None:
            self._shard_order.stream = stream
        self.loader.next_epoch = epoch
        if self.resize is not None and self.decoder is not None:
            res = self.resize(epoch)
            self.decoder.output_size = (res, res)

    @property
    def resolution(self) -> int:
        return self.decoder.output_size[0] if self.decoder is not None else -1

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.loader.next_epoch = self.epoch
        torch_threads = torch.get_num_threads()
        batches = iter(self.loader)
        torch.set_num_threads(torch_threads)
        for x, y in batches:
            if self.normalize is not None:
                x = self.normalize(x)
            else:
                layout = torch.channels_last if self.channels_last else torch.contiguous_format
                x = x.to(self.dtype, memory_format=layout)
            yield x, y.to(torch.int64, copy=True)  # labels are tiny: hand out our own copy


def imagenet_train_loader(path, cfg: DataConfig, *, resolution: int = 224, resize: ProgressiveResize | None = None,
                          dtype: torch.dtype = torch.float32, order: str = "random") -> FFCVLoader:
    """Random-resized crop (scale 0.08-1, ratio 3/4-4/3) to ``resolution`` (or ``resize(epoch)``), flip."""
    res = resize(0) if resize is not None else resolution
    decoder = RandomResizedCropRGBImageDecoder((res, res))
    return FFCVLoader(path, cfg, [decoder, RandomHorizontalFlip()], train=True, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, dtype=dtype, order=order, resize=resize, decoder=decoder)


def imagenet_val_loader(path, cfg: DataConfig, *, resolution: int = 224, ratio: float = DEFAULT_CROP_RATIO,
                        dtype: torch.dtype = torch.float32) -> FFCVLoader:
    """Centre crop of ``ratio`` of the shorter side resized to ``resolution``: 224/256 matches
    Resize(256) + CenterCrop(224)."""
    decoder = CenterCropRGBImageDecoder((resolution, resolution), ratio=ratio)
    return FFCVLoader(path, cfg, [decoder], train=False, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype=dtype,
                      decoder=decoder)


def cifar_train_loader(path, cfg: DataConfig, *, mean, std, pad: int = CIFAR_PAD,
                       dtype: torch.dtype = torch.float32) -> FFCVLoader:
    """Pad-``pad`` (zeros) random crop and horizontal flip of fixed-size images."""
    ops = [SimpleRGBImageDecoder(), RandomHorizontalFlip(), RandomTranslate(padding=pad, fill=(0, 0, 0))]
    return FFCVLoader(path, cfg, ops, train=True, mean=mean, std=std, dtype=dtype)


def cifar_test_loader(path, cfg: DataConfig, *, mean, std, dtype: torch.dtype = torch.float32,
                      batch_size: int = 1000) -> FFCVLoader:
    return FFCVLoader(path, cfg, [SimpleRGBImageDecoder()], train=False, mean=mean, std=std, dtype=dtype,
                      batch_size=batch_size)

"""The image-folder loader: torchvision ImageFolder + PIL in DataLoader workers.

Workers produce uint8 crops; normalisation (and the dtype cast) happens on the target device,
as in the FFCV GPU path, so host-to-device copies stay 1 byte per channel.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import datasets
from torchvision import transforms as T

from nptm.data.constants import DEFAULT_CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD
from nptm.data.registry import DataConfig, DataError
from nptm.data.transforms import DeviceNormalize, ProgressiveResize
from nptm.utils.seeding import mix_seed


def open_image_folder(root) -> datasets.ImageFolder:
    """torchvision ImageFolder (classes = sorted sub-folder names), errors as DataError."""
    try:
        return datasets.ImageFolder(str(root))
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"image folder {root}: {e}") from None


def _header_error(path: str) -> str | None:
    """Why PIL cannot identify ``path`` as an image from its header (None: it can); reads a few kB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ...)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


@functools.cache
def check_images(root: str, paths: tuple[str, ...]) -> None:
    """Fail before training when a file of an image folder is no image PIL can open (its header is checked, in 16
    threads: about a minute for ImageNet's 1.3M files on a local disk); an image whose data is damaged past its
    header fails when it is loaded, naming the file."""
    with ThreadPoolExecutor(16) as pool:
        errors = list(pool.map(_header_error, paths, chunksize=256))
    bad = [(p, e) for p, e in zip(paths, errors) if e is not None]
    if bad:
        raise DataError(f"image folder {root}: {len(bad)} unreadable image(s), e.g. {bad[0][0]} ({bad[0][1]}); "
                        "remove or replace them (python -m nptm.data write lists them and leaves them out)")


def _load(base, i: int):
    try:
        return base[i]
    except Exception as e:  # noqa: BLE001  (a damaged image fails in PIL with many types)
        path = _sample_path(base, i)
        raise DataError(f"unreadable image {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                        "remove or replace it, then continue with --resume") from None


def _sample_path(base, i: int) -> str:
    while isinstance(base, Subset):
        base, i = base.dataset, base.indices[i]
    return base.samples[i][0] if hasattr(base, "samples") else f"sample {i}"


def _one_line(e: DataError) -> DataError:
    """A DataError re-raised by a DataLoader worker carries the worker's traceback: keep its own last line."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return DataError(lines[-1].split("DataError: ", 1)[-1] if len(lines) > 1 else str(e))


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = _load(self.base, i)
        return self.transform(x), y


class ImageFolderLoader:
    """EpochLoader over an image folder; ``set_epoch`` fixes shuffle, crop randomness and resolution."""

    def __init__(self, root, cfg: DataConfig, *, train: bool, resolution: int, ratio: float = DEFAULT_CROP_RATIO,
                 resize: ProgressiveResize | None = None, dtype: torch.dtype = torch.float32,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.folder = open_image_folder(root)
        check_images(str(root), tuple(p for p, _ in self.folder.samples))
        self.num_samples, self.num_classes = len(self.folder), len(self.folder.classes)
        self.cfg, self.train, self.resize = cfg, train, resize
        self.seed, self.stream, self.epoch = cfg.seed, 0, 0
        if train:
            self.crop = T.RandomResizedCrop(resize(0) if resize else resolution)
            transform = T.Compose([self.crop, T.RandomHorizontalFlip(), T.PILToTensor()])
            self.sampler = DistributedSampler(self.folder, num_replicas=cfg.world_size, rank=cfg.rank, shuffle=True)
            data = self.folder
        else:
            self.crop = None
            transform = T.Compose([T.Resize(round(resolution / ratio)), T.CenterCrop(resolution), T.PILToTensor()])
            self.sampler = None
            data = Subset(self.folder, range(cfg.rank, len(self.folder), cfg.world_size))
        self.data = _Transformed(data, transform)
        self.normalize = DeviceNormalize(mean, std, cfg.device, dtype, cfg.channels_last)
        self.set_epoch(0)

    def set_epoch(self, epoch: int, stream: int = 0) -> None:
        self.epoch, self.stream = epoch, stream
        if self.sampler is not None:
            self.sampler.seed = mix_seed(self.seed, stream)
            self.sampler.set_epoch(epoch)
        if self.crop is not None and self.resize is not None:
            res = self.resize(epoch)
            self.crop.size = (res, res)

    @property
    def resolution(self) -> int:
        return self.crop.size[0] if self.crop is not None else -1

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.data)
        bs = self.cfg.batch_size
        return n // bs if self.train else -(-n // bs)

    def __iter__(self):
        on_gpu = torch.device(self.cfg.device).type == "cuda"
        loader = DataLoader(self.data, batch_size=self.cfg.batch_size, sampler=self.sampler, shuffle=False,
                            num_workers=self.cfg.workers, pin_memory=on_gpu, drop_last=self.train,
                            generator=torch.Generator().manual_seed(mix_seed(self.seed, self.stream, self.epoch)))
        try:
            for x, y in loader:
                yield self.normalize(x), y.to(self.normalize.device, non_blocking=True)
        except DataError as e:
            raise _one_line(e) from None


def imagefolder_train_loader(root, cfg: DataConfig, *, resolution: int = 224, resize: ProgressiveResize | None = None,
                             dtype: torch.dtype = torch.float32) -> ImageFolderLoader:
    """RandomResizedCrop(resolution or resize(epoch)) + horizontal flip, normalised on the device."""
    return ImageFolderLoader(root, cfg, train=True, resolution=resolution, resize=resize, dtype=dtype)


def imagefolder_val_loader(root, cfg: DataConfig, *, resolution: int = 224, ratio: float = DEFAULT_CROP_RATIO,
                           dtype: torch.dtype = torch.float32) -> ImageFolderLoader:
    """Resize(resolution / ratio) + CenterCrop(resolution): Resize(256) + CenterCrop(224) by default."""
    return ImageFolderLoader(root, cfg, train=False, resolution=resolution, ratio=ratio, dtype=dtype)

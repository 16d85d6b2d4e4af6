"""Image-folder datasets: ``DATA_DIR/train/<class>/...`` and ``DATA_DIR/val/<class>/...`` (any number of
classes, any image size) through torchvision+PIL, or ``train.beton`` + ``val.beton`` through FFCV.

Training takes a random-resized crop to ``train_resolution`` (or the progressive-resizing schedule)
with a horizontal flip, evaluation a centre crop of ``crop_ratio`` of the shorter side resized to
``val_resolution``; both normalised with ImageNet's statistics (what torchvision's pretrained models
expect). ``DataConfig.loader`` picks the reader (``nptm.data.loaders.choose``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from nptm.data.constants import DEFAULT_CROP_RATIO, DEFAULT_RESOLUTION
from nptm.data.loaders.choose import choose_loader
from nptm.data.registry import DataConfig, DataError, DataSpec, register_dataset
from nptm.data.transforms import ProgressiveResize

BETONS, FOLDERS = ("train.beton", "val.beton"), ("train", "val")
# the ImageNet recipe of the SPEC: the schedule a pretrained torchvision model was trained with
IMAGENET_DEFAULTS = dict(model="resnet50", epochs=90, retrain_epochs=45, batch_size=256, lr=0.1,
                         milestones=(30 / 90, 60 / 90), latency_batches=(1, 16))


@dataclass
class ImageOptions:
    """Loader options beyond DataConfig; ``from_config`` takes same-named DataConfig attributes if present."""

    train_resolution: int = DEFAULT_RESOLUTION
    progressive_resize: ProgressiveResize | None = None
    val_resolution: int = DEFAULT_RESOLUTION
    crop_ratio: float = DEFAULT_CROP_RATIO
    input_dtype: torch.dtype = torch.float32
    order: str = "random"  # random | quasi_random (FFCV only; page-local shuffling for data beyond RAM)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> "ImageOptions":
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if getattr(cfg, f.name, None) is not None})


def data_root(cfg: DataConfig, what: str) -> Path:
    if not cfg.data_dir:
        raise DataError(f"{what} needs --data-dir")
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{what}: data directory {root} does not exist")
    return root


def image_folder_spec(cfg: DataConfig, opts: ImageOptions | None = None, what: str | None = None) -> DataSpec:
    opts, what = opts or ImageOptions(), what or cfg.name
    root = data_root(cfg, what)
    backend = choose_loader(cfg.loader, root, BETONS, FOLDERS, what, device=cfg.device)
    if backend == "ffcv":
        from nptm.data.loaders import ffcv_loader as fl

        train = fl.imagenet_train_loader(root / "train.beton", cfg, resolution=opts.train_resolution,
                                         resize=opts.progressive_resize, dtype=opts.input_dtype, order=opts.order)
        test = fl.imagenet_val_loader(root / "val.beton", cfg, resolution=opts.val_resolution,
                                      ratio=opts.crop_ratio, dtype=opts.input_dtype)
        n_train, n_classes = fl.beton_info(root / "train.beton")
    else:
        from nptm.data.loaders import folder as fo

        if opts.order != "random":
            raise DataError(f"order {opts.order!r} needs the FFCV loader")
        train = fo.imagefolder_train_loader(root / "train", cfg, resolution=opts.train_resolution,
                                            resize=opts.progressive_resize, dtype=opts.input_dtype)
        test = fo.imagefolder_val_loader(root / "val", cfg, resolution=opts.val_resolution, ratio=opts.crop_ratio,
                                         dtype=opts.input_dtype)
        if train.folder.classes != test.folder.classes:
            raise DataError(f"{what}: {root / 'train'} and {root / 'val'} hold different class folders "
                            f"({len(train.folder.classes)} vs {len(test.folder.classes)})")
        n_train, n_classes = train.num_samples, train.num_classes
    return DataSpec(train=train, test=test, num_classes=n_classes, in_channels=3, image_size=opts.val_resolution,
                    train_examples=n_train)


def folder_source(name: str, path: Path | None, split: str, workers: int = 1):
    """Every readable image of an image folder (one sub-folder per class) for ``python -m nptm.data write``;
    unreadable ones are found by a parallel decoding pass, printed and left out."""
    import sys
    from multiprocessing import Pool

    from nptm.data.loaders.folder import open_image_folder
    from nptm.data.sources import FolderImages, Source, probe_image
    from nptm.utils.progress import progress

    if path is None:
        raise DataError(f"source {name!r} needs a path: {name}:PATH")
    if not path.is_dir():
        raise DataError(f"imagefolder: {path} is not a directory")
    folder = open_image_folder(path)
    paths = [p for p, _ in folder.samples]
    with Pool(workers) as pool:
        errors = list(progress(pool.imap(probe_image, paths, chunksize=16), total=len(paths), desc="checking images",
                           unit="img", file=sys.stderr))
    bad = [(p, e) for p, e in zip(paths, errors) if e is not None]
    for p, e in bad:
        print(f"unreadable image {p}: {e}", file=sys.stderr)
    good = [s for s, e in zip(folder.samples, errors) if e is None]
    if not good:
        raise DataError(f"imagefolder: no readable image in {path} ({len(bad)} unreadable)")
    return Source(FolderImages(good), len(folder.classes), f"imagefolder {path}"), bad


@register_dataset("imagefolder", defaults=IMAGENET_DEFAULTS, loaders=True, resolutions=True, source=folder_source)
def build_image_folder(cfg: DataConfig) -> DataSpec:
    return image_folder_spec(cfg, ImageOptions.from_config(cfg))

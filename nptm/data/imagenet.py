"""ImageNet (FFCV .beton files, or JPEG folders through torchvision+PIL) and the ffcv-imagenet recipe.

``DATA_DIR`` holds ``train.beton`` and ``val.beton`` (written by ``python -m nptm.data write``) for
the FFCV loader, and/or ``train/`` and ``val/`` (one folder per class) for the fallback loader.
``DataConfig.loader`` picks: ``ffcv``, ``torchvision`` or ``auto`` (FFCV when importable and the
.beton files exist, otherwise the fallback, announced in one line on stderr).
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nptm.data.registry import DataConfig, DataError, DataSpec, register_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_RATIO = 224 / 256
LOADERS = ("auto", "ffcv", "torchvision")


@dataclass(frozen=True)
class ProgressiveResize:
    """ffcv-imagenet resolution schedule: ``min_res`` up to epoch ``start_ramp``, then a linear ramp
    (rounded to multiples of ``step``) reaching ``max_res`` at epoch ``end_ramp``."""

    min_res: int = 160
    max_res: int = 192
    start_ramp: int = 11
    end_ramp: int = 13
    step: int = 32

    def __call__(self, epoch: int) -> int:
        if epoch <= self.start_ramp:
            return self.min_res
        if epoch >= self.end_ramp:
            return self.max_res
        res = np.interp(epoch, [self.start_ramp, self.end_ramp], [self.min_res, self.max_res])
        return int(round(res / self.step)) * self.step


def ffcv_imagenet_lr(epoch: float, peak_lr: float, epochs: int, peak_epoch: float = 2) -> float:
    """ffcv-imagenet 'cyclic' lr at a fractional epoch: linear from 1e-4*peak at 0 to peak at
    ``peak_epoch``, then linear to 0 at ``epochs`` (evaluate per iteration: epoch + i / iters)."""
    return float(np.interp(epoch, [0, peak_epoch, epochs], [1e-4 * peak_lr, peak_lr, 0.0]))


def _recipe(arch, epochs, batch_size, world_size, lr, weight_decay, start_ramp, end_ramp):
    return dict(
        arch=arch, epochs=epochs, batch_size=batch_size, world_size=world_size, lr=lr, lr_peak_epoch=2,
        lr_schedule="linear warm-up from 1e-4*lr to lr at epoch 2, linear decay to 0 (per iteration)",
        optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=weight_decay, bn_weight_decay=0.0,
        label_smoothing=0.1, amp_dtype="bfloat16", channels_last=True, blurpool=True,
        progressive_resize=ProgressiveResize(160, 192, start_ramp, end_ramp), val_resolution=256,
        crop_ratio=DEFAULT_CROP_RATIO, tta_flip=True,
        order="random" if world_size > 1 else "quasi_random",
        write=dict(max_resolution=500, jpeg_quality=90, compress_probability=0.5, write_mode="proportion"),
    )


# ffcv-imagenet configs (rn50_configs/, rn18_configs/); batch_size is per GPU, lr is the peak.
# Published: rn50 16 ep 73.8% / 88 ep 78.4% top-1 on 8xA100; rn18 16 ep 66.9% on 1xA100.
# ffcv-imagenet ran fp16 autocast + GradScaler; bf16 here needs no scaler.
IMAGENET_PRESET: dict[str, dict] = {
    "rn50_16": _recipe("resnet50", 16, 512, 8, 1.7, 1e-4, 11, 13),
    "rn50_88": _recipe("resnet50", 88, 512, 8, 1.7, 1e-4, 65, 76),
    "rn18_16": _recipe("resnet18", 16, 1024, 1, 0.5, 5e-5, 11, 13),
    "rn18_88": _recipe("resnet18", 88, 1024, 1, 0.5, 5e-5, 65, 76),
}


class DeviceNormalize:
    """uint8 N,C,H,W batch -> (x/255 - mean)/std on ``device`` in ``dtype``, arithmetic in float32."""

    def __init__(self, mean, std, device, dtype=torch.float32, channels_last: bool = False):
        self.device, self.dtype, self.channels_last = torch.device(device), dtype, channels_last
        std255 = torch.tensor(std, dtype=torch.float32) * 255
        self.scale = (1 / std255).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) * 255 / std255).view(1, -1, 1, 1).to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().mul_(self.scale).add_(self.shift).to(self.dtype)


@functools.cache
def ffcv_import_error() -> str | None:
    """None when ffcv imports; otherwise why not (a missing package or a broken build)."""
    try:
        import ffcv.fields  # noqa: F401
        import ffcv.loader  # noqa: F401
    except Exception as e:  # ImportError, OSError (libturbojpeg), numba/numpy mismatches
        return f"{type(e).__name__}: {e}"
    return None


def ffcv_available() -> bool:
    return ffcv_import_error() is None


@dataclass
class ImageNetOptions:
    """Loader options beyond DataConfig; ``from_config`` takes same-named DataConfig attributes if present."""

    train_resolution: int = 224
    progressive_resize: ProgressiveResize | None = None
    val_resolution: int = 224
    crop_ratio: float = DEFAULT_CROP_RATIO
    input_dtype: torch.dtype = torch.float32
    order: str = "random"  # random | quasi_random (FFCV only; page-local shuffling for data beyond RAM)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> "ImageNetOptions":
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if getattr(cfg, f.name, None) is not None})


def choose_loader(loader: str, root: Path, beton_names: tuple[str, ...], folder_names: tuple[str, ...],
                  what: str) -> str:
    """'ffcv' or 'torchvision' for ``loader`` in auto|ffcv|torchvision, given what ``root`` holds."""
    if loader not in LOADERS:
        raise DataError(f"unknown loader {loader!r}; choose from {', '.join(LOADERS)}")
    missing_betons = [n for n in beton_names if not (root / n).is_file()]
    missing_folders = [n + "/" for n in folder_names if not (root / n).is_dir()]
    if loader == "ffcv" or (loader == "auto" and not missing_betons and ffcv_available()):
        if not ffcv_available():
            raise DataError(f"--loader ffcv: ffcv is not importable ({ffcv_import_error()})")
        if missing_betons:
            raise DataError(f"{what}: {root} lacks {', '.join(missing_betons)} "
                            f"(write them with: python -m nptm.data write --source ... --out FILE.beton)")
        return "ffcv"
    if missing_folders:
        if loader == "torchvision" or not missing_betons:
            why = "" if loader == "torchvision" else f" (its .beton files need ffcv: {ffcv_import_error()})"
            raise DataError(f"{what}: {root} lacks {', '.join(missing_folders)} for the torchvision loader{why}")
        raise DataError(f"{what} not found in {root}: expected {' and '.join(beton_names)} (FFCV) "
                        f"or {' and '.join(n + '/' for n in folder_names)} image folders")
    if loader == "auto":
        why = f"ffcv is not importable ({ffcv_import_error()})" if not missing_betons else \
            f"no {', '.join(missing_betons)} in {root}"
        print(f"nptm: {why}; using the slower torchvision+PIL loader", file=sys.stderr)
    return "torchvision"


def _root(cfg: DataConfig, what: str) -> Path:
    if not cfg.data_dir:
        raise DataError(f"{what} needs --data-dir")
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{what}: data directory {root} does not exist")
    return root


def imagenet_spec(cfg: DataConfig, opts: ImageNetOptions | None = None) -> DataSpec:
    opts = opts or ImageNetOptions()
    root = _root(cfg, "imagenet")
    backend = choose_loader(cfg.loader, root, ("train.beton", "val.beton"), ("train", "val"), "imagenet")
    if backend == "ffcv":
        from nptm.data import ffcv_pipelines as fp

        train = fp.imagenet_train_loader(root / "train.beton", cfg, resolution=opts.train_resolution,
                                         resize=opts.progressive_resize, dtype=opts.input_dtype, order=opts.order)
        test = fp.imagenet_val_loader(root / "val.beton", cfg, resolution=opts.val_resolution,
                                      ratio=opts.crop_ratio, dtype=opts.input_dtype)
        n_train, n_classes = fp.beton_info(root / "train.beton")
    else:
        from nptm.data import imagefolder as fb

        if opts.order != "random":
            raise DataError(f"order {opts.order!r} needs the FFCV loader")
        train = fb.imagefolder_train_loader(root / "train", cfg, resolution=opts.train_resolution,
                                            resize=opts.progressive_resize, dtype=opts.input_dtype)
        test = fb.imagefolder_val_loader(root / "val", cfg, resolution=opts.val_resolution, ratio=opts.crop_ratio,
                                         dtype=opts.input_dtype)
        n_train, n_classes = train.num_samples, train.num_classes
    return DataSpec(train=train, test=test, num_classes=n_classes, in_channels=3, image_size=opts.val_resolution,
                    train_examples=n_train)


@register_dataset("imagenet")
def build_imagenet(cfg: DataConfig) -> DataSpec:
    return imagenet_spec(cfg, ImageNetOptions.from_config(cfg))


def cifar_beton_spec(cfg: DataConfig, dtype: torch.dtype = torch.float32) -> DataSpec:
    """CIFAR-10/100 from ``DATA_DIR/train.beton`` and ``DATA_DIR/test.beton`` through FFCV."""
    from nptm.data.cifar import LAYOUTS, MEAN, STD

    root = _root(cfg, cfg.name)
    missing = [n for n in ("train.beton", "test.beton") if not (root / n).is_file()]
    if missing:
        raise DataError(f"{cfg.name}: {root} lacks {', '.join(missing)}")
    if not ffcv_available():
        raise DataError(f"{cfg.name}: .beton files need ffcv, which is not importable ({ffcv_import_error()})")
    from nptm.data import ffcv_pipelines as fp

    n_train, n_classes = fp.beton_info(root / "train.beton")
    n_classes = LAYOUTS[cfg.name][4] if cfg.name in LAYOUTS else n_classes
    train = fp.cifar_train_loader(root / "train.beton", cfg, mean=MEAN, std=STD, dtype=dtype)
    test = fp.cifar_test_loader(root / "test.beton", cfg, mean=MEAN, std=STD, dtype=dtype)
    return DataSpec(train=train, test=test, num_classes=n_classes, in_channels=3, image_size=32,
                    train_examples=n_train)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, *, tta_flip: bool = False, autocast_dtype: torch.dtype | None = None,
             label_smoothing: float = 0.0) -> dict[str, float]:
    """Top-1/top-5 accuracy and mean loss over ``batches``; ``tta_flip`` averages the logits of each
    image and its horizontal mirror (ffcv-imagenet's test-time flip). The sums ('correct1',
    'correct5', 'loss_sum', 'count') are returned too, for an all-reduce across ranks."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    count = 0
    for x, y in batches:
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x).float()
            if tta_flip:
                logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
        loss_sum += F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += len(y)
    model.train(was_training)
    n = max(count, 1)
    return dict(top1=correct1 / n, top5=correct5 / n, loss=loss_sum / n, correct1=correct1, correct5=correct5,
                loss_sum=loss_sum, count=count)

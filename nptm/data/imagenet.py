"""ImageNet: an image-folder dataset (``train/`` + ``val/``, or ``train.beton`` + ``val.beton``) with the
SPEC's ImageNet recipe as its study defaults. The ffcv-imagenet recipes live in ``nptm.study.presets``."""
from __future__ import annotations

from nptm.data.imagefolder import IMAGENET_DEFAULTS, ImageOptions, image_folder_spec
from nptm.data.registry import DataConfig, DataSpec, register_dataset


@register_dataset("imagenet", defaults=IMAGENET_DEFAULTS, loaders=True, resolutions=True)
def build_imagenet(cfg: DataConfig) -> DataSpec:
    return image_folder_spec(cfg, ImageOptions.from_config(cfg), "imagenet")

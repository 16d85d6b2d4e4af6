"""Datasets by name: importing this package registers every available loader."""
from nptm.data.registry import DATASETS, DataConfig, DataError, DataSpec, build_dataset, register_dataset
from nptm.data import cifar, digits  # noqa: F401  (register digits, cifar10, cifar100)

try:  # optional: ImageNet / FFCV loaders live in their own module
    from nptm.data import imagenet  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "nptm.data.imagenet":
        raise

__all__ = ["DATASETS", "DataConfig", "DataError", "DataSpec", "build_dataset", "register_dataset"]

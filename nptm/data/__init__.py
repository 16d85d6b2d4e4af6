"""Datasets by name (``DATASETS``): each file of this package that calls ``register_dataset`` is discovered on the
first lookup (digits, cifar10, cifar100, imagenet, imagefolder); third-party ones come through the
``nptm.datasets`` entry point group."""
from nptm.data.registry import DATASETS, DataConfig, DataError, DataSpec, Dataset, build_dataset, get_dataset, register_dataset

__all__ = ["DATASETS", "DataConfig", "DataError", "DataSpec", "Dataset", "build_dataset", "get_dataset",
           "register_dataset"]

"""Datasets by name: importing this package registers every dataset (digits, cifar10, cifar100,
imagenet, imagefolder; third-party ones through the ``nptm.datasets`` entry point group)."""
from nptm.data.registry import DATASETS, DataConfig, DataError, DataSpec, Dataset, build_dataset, get_dataset, register_dataset
from nptm.data import cifar, digits, imagefolder, imagenet  # noqa: F401,E402  (each registers itself)

__all__ = ["DATASETS", "DataConfig", "DataError", "DataSpec", "Dataset", "build_dataset", "get_dataset",
           "register_dataset"]

"""Loaders: in-memory tensors, FFCV .beton files, image folders, and the module that picks one."""
from nptm.data.loaders.choose import LOADERS, choose_loader, ffcv_available, ffcv_import_error
from nptm.data.loaders.tensor import TensorLoader

__all__ = ["LOADERS", "TensorLoader", "choose_loader", "ffcv_available", "ffcv_import_error"]

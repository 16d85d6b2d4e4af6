"""Refuse, in one line, a compiled ``nptm._C`` that meets another torch than the one it was built against."""
from __future__ import annotations

import importlib

import torch

REBUILD = ("rebuild it against this torch: pip install --force-reinstall --no-deps . in the nptm source "
           "(a checkout used in place: python setup.py build_ext --inplace)")


def torch_mismatch(built: str, cuda_kernels: bool, running: str = torch.__version__) -> str | None:
    """Why an extension built against torch ``built`` cannot load under torch ``running`` (None: it can).
    The release must match; with CUDA kernels compiled in, the build variant (+cu130, +cpu) too."""
    same = built == running if cuda_kernels else built.split("+")[0] == running.split("+")[0]
    return None if same else f"nptm._C was built against torch {built} but torch {running} is installed; {REBUILD}"


def check_build() -> None:
    """Raise ImportError before loading nptm._C when nptm/_build_info.py (written by setup.py) names another torch."""
    try:
        info = importlib.import_module("nptm._build_info")
    except ModuleNotFoundError:  # built before the build info existed: nothing to compare
        return
    why = torch_mismatch(info.TORCH_VERSION, info.CUDA_KERNELS)
    if why:
        raise ImportError(why)

"""The model registry: a name maps to ``factory(num_classes, in_channels) -> nn.Module``. Each model family's file
in this package registers its models (discovered); third-party packages through the ``nptm.models`` entry points."""
from __future__ import annotations

from typing import Callable

from torch import nn

from nptm.utils.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "nptm.models", package="nptm.models")

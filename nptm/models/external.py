"""Models from outside nptm's registry: any torchvision classification model by name, and a user's own
``package.module:factory`` (called as ``factory(num_classes=N)``)."""
from __future__ import annotations

import functools
import importlib

from torch import nn

# auxiliary heads return a tuple in training mode: the study trains the main head only
_NO_AUX = {"googlenet": dict(aux_logits=False, init_weights=True), "inception_v3": dict(aux_logits=False, init_weights=True)}


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    """torchvision's classification models (``torchvision.models.list_models(module=torchvision.models)``)."""
    import torchvision  # here, not at import: it costs about two seconds (torch._dynamo)

    return tuple(torchvision.models.list_models(module=torchvision.models))


def torchvision_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    if in_channels != 3:
        raise ValueError(f"torchvision's {name} takes 3-channel images, this dataset has {in_channels}")
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **_NO_AUX.get(name, {}))


def resolve_factory(spec: str):
    """The callable named by ``package.module:factory`` (``factory`` may be dotted, e.g. ``Class.build``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r}: expected package.module:factory")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{spec}: cannot import {module_name} ({e})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{spec}: {module_name} has no {attr}")
    if not callable(obj):
        raise ValueError(f"{spec}: {attr} is not callable")
    return obj


def factory_model(spec: str, num_classes: int) -> nn.Module:
    """``factory(num_classes=N)`` for ``spec`` = ``package.module:factory``."""
    model = resolve_factory(spec)(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}: it returned {type(model).__name__}, not a torch.nn.Module")
    return model

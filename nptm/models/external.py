"""Models from outside nptm's registry: any torchvision classification model by name, any timm model as
``timm/NAME`` (``MODEL_SOURCES``: a package of models under a prefix), and a user's own ``package.module:factory``
(called as ``factory(num_classes=N)``)."""
from __future__ import annotations

import difflib
import functools
import importlib

from torch import nn

from nptm.utils.registry import Registry

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


class TimmModels:
    """``timm/NAME``: any classification model of timm (``timm.list_models()``), untrained, when timm is installed."""

    @staticmethod
    def _timm():
        try:
            import timm
        except ImportError:
            raise ValueError("timm/ models need timm: pip install timm") from None
        return timm

    def check(self, name: str) -> None:
        timm = self._timm()
        if not timm.is_model(name):
            near = difflib.get_close_matches(name, timm.list_models(), n=5)
            raise ValueError(f"timm has no model {name!r}" + (f"; close: {', '.join(near)}" if near else
                                                             "; list them with timm.list_models()"))

    def build(self, name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
        self.check(name)
        return self._timm().create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


# prefix -> models named ``prefix/NAME`` (a package of models that lists its own names)
MODEL_SOURCES: Registry = Registry("model source")
MODEL_SOURCES.register("timm", TimmModels())


def source_of(name: str) -> tuple[object, str] | None:
    """(the source, the model's name there) for ``prefix/NAME``; None for other names."""
    prefix, slash, rest = name.partition("/")
    if not slash or ":" in name:
        return None
    try:
        return MODEL_SOURCES[prefix], rest
    except KeyError:
        raise ValueError(f"unknown model source {prefix!r} in {name!r}; choose from "
                         f"{', '.join(p + '/NAME' for p in MODEL_SOURCES)}") from None

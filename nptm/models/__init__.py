"""Models by name (``MODELS``: one file per family in this package, discovered): CIFAR ResNets and VGG-16,
torchvision ResNets, a small digits CNN; param/MAC counts.

``build_model`` also takes any torchvision classification model by name and ``package.module:factory``
(``nptm.models.external``); nptm's own names come first (``vgg16`` is the CIFAR VGG: torchvision's is
``torchvision.models:vgg16``)."""
from __future__ import annotations

from torch import nn

from nptm.models.counting import count_flops, count_params
from nptm.models.external import MODEL_SOURCES, factory_model, resolve_factory, source_of, torchvision_model, torchvision_names
from nptm.models.presets import FILTER_PRESETS, filter_preset
from nptm.models.registry import MODELS
from nptm.utils.registry import UnknownChoice

__all__ = ["MODELS", "FILTER_PRESETS", "filter_preset", "build_model", "check_model_name", "reinitialize", "count_params",
           "count_flops"]


def check_model_name(name: str) -> None:
    """ValueError (one line, listing the choices) unless ``build_model`` knows ``name``."""
    if name in MODELS:
        return
    if (source := source_of(name)) is not None:
        source[0].check(source[1])
    elif ":" in name:
        resolve_factory(name)
    elif name not in MODELS and name not in torchvision_names():
        raise UnknownChoice(f"unknown model {name!r}; choose from {', '.join(MODELS)}, any torchvision "
                            f"classification model (e.g. mobilenet_v3_small, vit_b_16), "
                            f"{', '.join(p + '/NAME' for p in MODEL_SOURCES)} (e.g. timm/resnet18), "
                            f"or package.module:factory")


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model: nptm's own (``MODELS``; resnet18/34/50 are torchvision's, with any
    input channels), a torchvision classification model (weights=None), ``timm/NAME`` (pretrained=False), or
    ``package.module:factory``."""
    check_model_name(name)
    if name in MODELS:
        return MODELS[name](num_classes, in_channels)
    if (source := source_of(name)) is not None:
        return source[0].build(source[1], num_classes, in_channels)
    if ":" in name:
        return factory_model(name, num_classes)
    return torchvision_model(name, num_classes, in_channels)


def reinitialize(model: nn.Module) -> nn.Module:
    """Re-draw every weight with the model's own init (for Scratch-E/B baselines on a pruned architecture).

    nptm models use their reference init; others get torchvision's ResNet init (Kaiming-normal fan_out
    convs) and every other layer's own ``reset_parameters`` (BN 1/0, LayerNorm, linear, PReLU).
    """
    if hasattr(model, "reset_parameters"):
        model.reset_parameters()
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model

"""Structured (filter) pruning: PFEC's L1-norm criterion (Li et al. 2016) or random scores, physically
removing filters, their BN channels and the next layer's input channels.

Layer numbering (for the ResNet configs) follows Liu et al.'s res56prune.py / res110prune.py: every
nn.Conv2d in module order, from 1. In a CIFAR ResNet the stem conv is layer 1 and global block b
(0-based over all stages) has conv1 = layer 2b + 2 and conv2 = layer 2b + 3; only conv1 (even layers)
is pruned, at its stage's ratio, unless listed in ``skip``. ResNet-56 layers 2-18 are stage 0, 20-36
stage 1, 38-54 stage 2.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from nptm import ops
from nptm.models.chain import CifarVGG, DigitsNet
from nptm.models.cifar_resnet import CifarResNet

CIFAR_RESNETS = {"resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}
CHAINS = ("vgg16", "digits_net")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")
FILTER_ARCHS = (*CIFAR_RESNETS, *CHAINS, *TORCHVISION_RESNETS)

# Named configs: CIFAR ResNets map to (skipped layer ids, per-stage ratios); vgg16 to one ratio per conv.
PFEC_CONFIGS: dict[str, dict[str, tuple]] = {
    "resnet56": {
        "A": ((16, 20, 38, 54), (0.1, 0.1, 0.1)),
        "B": ((16, 18, 20, 34, 38, 54), (0.6, 0.3, 0.1)),
    },
    "resnet110": {  # A, B: Li et al.; C, D: the ICLR 2021 study's extra configs
        "A": ((36,), (0.5, 0.0, 0.0)),
        "B": ((36, 38, 74), (0.5, 0.4, 0.3)),
        "C": ((36, 38, 74), (0.5, 0.5, 0.5)),
        "D": ((36, 38, 74), (0.5, 0.6, 0.7)),
    },
    "vgg16": {"A": ((0.5,) + (0.0,) * 6 + (0.5,) * 6,)},  # VGG-16-pruned-A: conv 1 and convs 8-13 halved
}


@dataclass(frozen=True)
class FilterGroup:
    """``conv``'s output filters, ``bn``'s channels and the input channels (dim 1) of ``consumers``."""

    conv: str
    bn: str | None
    consumers: tuple[str, ...]
    layer_id: int  # 1-based index among all Conv2d modules in module order
    stage: int  # ResNets: index of the stage (layer1 = 0); chains: 0


def _check_arch(model: nn.Module, arch: str) -> None:
    if arch not in FILTER_ARCHS:
        raise ValueError(f"filter pruning does not support {arch!r}; supported: {', '.join(FILTER_ARCHS)}")
    if arch in CIFAR_RESNETS:
        n = (CIFAR_RESNETS[arch] - 2) // 6
        ok = isinstance(model, CifarResNet) and len(model.layer1) == n
    elif arch in CHAINS:
        ok = isinstance(model, CifarVGG if arch == "vgg16" else DigitsNet)
    else:
        ok = isinstance(model, torchvision.models.ResNet)
    if not ok:
        raise ValueError(f"model {type(model).__name__} is not a {arch}")


def filter_groups(model: nn.Module, arch: str) -> list[FilterGroup]:
    """The prunable filter groups of ``model`` (an ``arch``), in module order."""
    _check_arch(model, arch)
    ids = {name: i + 1 for i, name in enumerate(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))}
    groups = []
    if arch in CHAINS:
        feats = list(model.features.named_children())
        convs = [i for i, (_, m) in enumerate(feats) if isinstance(m, nn.Conv2d)]
        linear = next(f"classifier.{n}" for n, m in model.classifier.named_children() if isinstance(m, nn.Linear))
        for j, i in enumerate(convs):
            bn = f"features.{feats[i + 1][0]}" if i + 1 < len(feats) and isinstance(feats[i + 1][1], nn.BatchNorm2d) else None
            nxt = f"features.{feats[convs[j + 1]][0]}" if j + 1 < len(convs) else linear
            groups.append(FilterGroup(f"features.{feats[i][0]}", bn, (nxt,), ids[f"features.{feats[i][0]}"], 0))
        return groups
    stages = ("layer1", "layer2", "layer3") if arch in CIFAR_RESNETS else ("layer1", "layer2", "layer3", "layer4")
    for s, stage in enumerate(stages):
        for b, block in getattr(model, stage).named_children():
            p = f"{stage}.{b}"
            inner = 3 if isinstance(block, torchvision.models.resnet.Bottleneck) else 2
            for k in range(1, inner):
                groups.append(FilterGroup(f"{p}.conv{k}", f"{p}.bn{k}", (f"{p}.conv{k + 1}",), ids[f"{p}.conv{k}"], s))
    return groups


def _ratios(model: nn.Module, arch: str, groups: list[FilterGroup], ratios: str | float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(ratios, str):
        configs = PFEC_CONFIGS.get(arch, {})
        if ratios not in configs:
            raise ValueError(f"no PFEC config {ratios!r} for {arch}; configs: {', '.join(configs) or 'none (use a float ratio)'}")
        if arch == "vgg16":
            return {g.conv: r for g, r in zip(groups, configs[ratios][0], strict=True)}
        skip, per_stage = configs[ratios]
        return {g.conv: 0.0 if g.layer_id in skip else per_stage[g.stage] for g in groups}
    if isinstance(ratios, Mapping):
        unknown = set(ratios) - {g.conv for g in groups}
        if unknown:
            raise ValueError(f"ratios name layers that are not prunable filter groups: {sorted(unknown)}")
        out = {g.conv: float(ratios.get(g.conv, 0.0)) for g in groups}
    elif isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        out = {g.conv: float(ratios) for g in groups}
    else:
        raise TypeError(f"ratios must be a config name, a float or a mapping, got {type(ratios).__name__}")
    bad = {n: r for n, r in out.items() if not 0 <= r < 1}
    if bad:
        raise ValueError(f"filter pruning ratios must be in [0, 1), got {bad}")
    return out


def filter_counts(model: nn.Module, arch: str, ratios: str | float | Mapping[str, float]) -> dict[str, int]:
    """Conv name -> filters kept: max(1, int(C * (1 - p))) for every prunable group."""
    groups = filter_groups(model, arch)
    per_layer = _ratios(model, arch, groups, ratios)
    modules = dict(model.named_modules())
    return {g.conv: max(1, int(modules[g.conv].out_channels * (1 - per_layer[g.conv]))) for g in groups}


@torch.no_grad()
def select_filters(
    model: nn.Module, arch: str, method: str = "l1", ratios: str | float | Mapping[str, float] = "A", *, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Conv name -> sorted indices of the kept filters: the ``filter_counts`` highest scores, where the
    score is sum |w| over (in, kh, kw) (``l1``) or uniform random (``random``); ties keep the lower index."""
    if method not in ("l1", "random"):
        raise ValueError(f"unknown filter pruning method {method!r}; choices: l1, random")
    modules = dict(model.named_modules())
    keep = {}
    for name, k in filter_counts(model, arch, ratios).items():
        w = modules[name].weight
        if method == "l1":
            if bool(w.isnan().any()):
                raise ValueError(f"NaN weights in {name}.weight")
            scores = w.detach().double().abs().sum(dim=tuple(range(1, w.dim())))
        else:
            dev = generator.device if generator is not None else torch.device("cpu")
            scores = torch.rand(w.shape[0], generator=generator, device=dev, dtype=torch.float64).to(w.device)
        keep[name] = torch.sort(scores, descending=True, stable=True).indices[:k].sort().values
    return keep


def _param(t: Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=like.requires_grad)


@torch.no_grad()
def shrink_filters(model: nn.Module, arch: str, keep: Mapping[str, Tensor]) -> nn.Module:
    """A new model keeping only ``keep[conv]`` filters of each listed conv (and the matching BN channels
    and consumer input channels); every touched tensor is sliced in one ``nptm.ops.gather_channels`` call."""
    groups = {g.conv: g for g in filter_groups(model, arch)}
    new = copy.deepcopy(model)
    modules = dict(new.named_modules())
    out_idx: dict[str, Tensor] = {}
    in_idx: dict[str, tuple[Tensor, int]] = {}  # consumer -> (kept input channels, channels of the producer)
    for name, idx in keep.items():
        if name not in groups:
            raise ValueError(f"{name!r} is not a prunable filter group of {arch}; groups: {', '.join(groups)}")
        c = modules[name].out_channels
        idx = torch.as_tensor(idx, dtype=torch.long, device=modules[name].weight.device).reshape(-1)
        if idx.numel() == 0 or bool((idx < 0).any() | (idx >= c).any()) or idx.unique().numel() != idx.numel():
            raise ValueError(f"kept filters of {name} must be distinct indices in [0, {c}), at least one")
        if idx.numel() == c:
            continue
        idx = idx.sort().values
        out_idx[name] = idx
        for consumer in groups[name].consumers:
            in_idx[consumer] = (idx, c)

    triples: list[tuple[Tensor, int, Tensor]] = []
    slots: list[tuple[nn.Module, str, tuple[int, ...] | None]] = []  # where each gathered tensor goes

    def gather(module: nn.Module, attr: str, dim: int, index: Tensor, t: Tensor | None = None, shape=None) -> None:
        triples.append((getattr(module, attr) if t is None else t, dim, index))
        slots.append((module, attr, shape))

    for name in dict.fromkeys([*out_idx, *in_idx]):
        m = modules[name]
        o, (i, c_in) = out_idx.get(name), in_idx.get(name, (None, 0))
        if isinstance(m, nn.Linear):
            spatial = m.in_features // c_in  # features flattened channel-major
            i = (i[:, None] * spatial + torch.arange(spatial, device=i.device)).reshape(-1)
            gather(m, "weight", 1, i)
            m.in_features = i.numel()
            continue
        if m.groups != 1:
            raise ValueError(f"{name}: grouped convolutions are not supported by filter pruning")
        w = m.weight
        if o is not None and i is not None:  # both dims at once: rows (out, in) of a [O*I, kh*kw] view
            rows = (o[:, None] * w.shape[1] + i[None, :]).reshape(-1)
            gather(m, "weight", 0, rows, w.reshape(w.shape[0] * w.shape[1], -1), (o.numel(), i.numel(), *w.shape[2:]))
        elif o is not None:
            gather(m, "weight", 0, o)
        else:
            gather(m, "weight", 1, i)
        if o is not None:
            if m.bias is not None:
                gather(m, "bias", 0, o)
            m.out_channels = o.numel()
            bn_name = groups[name].bn
            if bn_name is not None:
                bn = modules[bn_name]
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(bn, attr, None) is not None:
                        gather(bn, attr, 0, o)
                bn.num_features = o.numel()
        if i is not None:
            m.in_channels = i.numel()

    for (module, attr, shape), t in zip(slots, ops.gather_channels(triples)):
        old = getattr(module, attr)
        t = t.reshape(shape) if shape is not None else t
        if isinstance(old, nn.Parameter):
            setattr(module, attr, _param(t, old))
        else:
            setattr(module, attr, t)
    return new


def prune_filters(
    model: nn.Module,
    arch: str,
    method: str = "l1",
    ratios: str | float | Mapping[str, float] = "A",
    *,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A NEW, physically smaller model: ``select_filters`` then ``shrink_filters``. ``ratios`` is a named
    config (``PFEC_CONFIGS``: resnet56 A/B, resnet110 A-D, vgg16 A), one float for every group, or
    conv name -> ratio. The input model is left untouched."""
    return shrink_filters(model, arch, select_filters(model, arch, method, ratios, generator=generator))


def shrink_to_counts(model: nn.Module, arch: str, counts: Mapping[str, int]) -> nn.Module:
    """The pruned architecture with ``counts[conv]`` filters (the first ones kept): rebuild a pruned
    model before ``load_state_dict``, or ``reinitialize`` it for Scratch-E/B."""
    return shrink_filters(model, arch, {n: torch.arange(int(k)) for n, k in counts.items()})


def counts_from_state_dict(model: nn.Module, arch: str, state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """Filters per prunable conv in a (pruned) state dict of an ``arch``."""
    return {g.conv: int(state_dict[f"{g.conv}.weight"].shape[0]) for g in filter_groups(model, arch)}

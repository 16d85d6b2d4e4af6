"""Benchmark workloads: prunable weights (conv + linear) of torchvision ResNet-50 and CIFAR ResNet-56."""
from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from harness import Unavailable

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODELS = ("resnet50", "resnet56")
SPARSITIES = (0.5, 0.9, 0.98)
PRIOR = 0.5  # the "second IMP round" workloads start from this sparsity


def dtypes(device: str) -> list[str]:
    return ["fp32", "bf16"] if device == "cuda" else ["fp32"]


def nptm_models():
    try:
        import nptm.models as models

        models.build_model  # noqa: B018
    except (ImportError, AttributeError) as e:
        raise Unavailable(f"nptm.models.build_model is not available ({e})") from None
    return models


@functools.lru_cache(maxsize=3)
def model(name: str) -> nn.Module:
    """The dense model on CPU in fp32, seeded (random init: magnitudes as after initialization)."""
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision

        return torchvision.models.resnet50()
    return nptm_models().build_model(name, num_classes=10)


def prunable_modules(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]


def prunable_weights(name: str, device: str, dtype: str) -> list[Tensor]:
    return [x.weight.detach().to(device, DTYPES[dtype]).clone() for x in prunable_modules(model(name))]


def magnitude_masks(ws: list[Tensor], sparsity: float) -> list[Tensor]:
    """Bool masks keeping |w| above the global k-th smallest |w| (via kthvalue: the workload, not a reference)."""
    flat = torch.cat([w.detach().abs().reshape(-1).float() for w in ws])
    k = round(sparsity * flat.numel())
    if k == 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in ws]
    thr = flat.kthvalue(k).values
    return [w.detach().abs().float() > thr for w in ws]


def channel_plan(name: str, device: str, dtype: str, keep: float = 0.5) -> list[tuple[Tensor, int, Tensor]]:
    """PFEC-like filter slicing of every residual block's first conv: it keeps the ``keep`` fraction of its
    filters with the largest L1 norm; its BN (4 tensors) and the next conv's input channels follow."""
    plan = []
    for blk in model(name).modules():
        c1, bn, c2 = (getattr(blk, a, None) for a in ("conv1", "bn1", "conv2"))
        if not (isinstance(c1, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(c2, nn.Conv2d)):
            continue
        n = max(1, int(c1.out_channels * keep))
        idx = c1.weight.detach().abs().sum((1, 2, 3)).topk(n).indices.sort().values.to(device)
        cvt = lambda t: t.detach().to(device, DTYPES[dtype]).contiguous()  # noqa: E731
        plan.append((cvt(c1.weight), 0, idx))
        plan += [(cvt(t), 0, idx) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
        plan.append((cvt(c2.weight), 1, idx))
    if not plan:
        raise Unavailable(f"{name}: no block with conv1/bn1/conv2 to slice")
    return plan


class Holder(nn.Module):
    """A module owning one ``weight`` Parameter: what torch.nn.utils.prune operates on."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight


def fresh_holders(params: list[nn.Parameter], masks: list[Tensor] | None = None) -> list[Holder]:
    """New modules around the same Parameters (no copy), optionally already pruned with ``masks``."""
    from torch.nn.utils import prune

    mods = [Holder(p) for p in params]
    for h, m in zip(mods, masks or ()):
        prune.custom_from_mask(h, "weight", m)
    return mods

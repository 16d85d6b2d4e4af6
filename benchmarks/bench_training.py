"""End to end. ``train_step``: one step (forward, backward, SGD Nesterov step) of CIFAR ResNet-20 on a
batch of 128 random 32x32 images: dense vs masked by nptm (step + ``Masks.apply(model, optimizer)``)
vs torch prune hooks (``prune.global_unstructured`` applied once, then steps with the hooks active).
``pruned_inference``: eval forward of a batch of 128 through the PFEC-pruned ResNet-56 (config B) vs
the dense one, next to the theoretical speedup from ``nptm.models.count_flops``. The variants are
timed round-robin so that load from other processes hits them alike.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.nn.utils import prune

import workloads as W
from harness import Case, Spec, Timed, Unavailable, pytest_bench

BATCH, SPARSITY = 128, 0.9


def specs(device: str, full: bool) -> list[Spec]:
    return [
        Spec("train_step", f"resnet20 b{BATCH} s={SPARSITY}", ("nptm_masks", "dense", "torch_prune_hooks"), ("resnet20",), True),
        Spec("pruned_inference", f"resnet56 PFEC-B b{BATCH}", ("pruned", "dense"), ("resnet56", "B"), True),
    ]


def _pruning(*names):
    try:
        import nptm.pruning as pruning

        return [getattr(pruning, n) for n in names]
    except (ImportError, AttributeError) as e:
        raise Unavailable(f"nptm.pruning.{'/'.join(names)} not available ({e})") from None


def _batch(device):
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (BATCH,), generator=g).to(device)


def _overhead(times, name):
    return f"{name} {(times[name] / times['dense'] - 1) * 100:+.1f}% vs dense" if name in times and "dense" in times else None


def build_train_step(spec: Spec, device: str) -> Case:
    (name,) = spec.params
    (prune_unstructured,) = _pruning("prune_unstructured")
    torch.manual_seed(0)
    base = W.nptm_models().build_model(name, num_classes=10)
    x, y = _batch(device)

    def model_and_opt(setup=None):
        m = copy.deepcopy(base).to(device).train()
        out = setup(m) if setup else None
        return m, torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4), out

    def hooks(m):
        prune.global_unstructured([(mod, "weight") for mod in W.prunable_modules(m)], prune.L1Unstructured, amount=SPARSITY)

    dense = model_and_opt()
    masked = model_and_opt(lambda m: prune_unstructured(m, "magnitude", SPARSITY, include_linear=True,
                                                        max_layer_sparsity=1.0))  # the masks torch.prune makes
    hooked = model_and_opt(hooks)

    def step(m, opt, masks=None):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()
        if masks is not None:
            masks.apply(m, opt)

    timed = {
        "nptm_masks": Timed(lambda: step(*masked)),
        "dense": Timed(lambda: step(*dense[:2])),
        "torch_prune_hooks": Timed(lambda: step(*hooked[:2])),
    }
    note = lambda t: "; ".join(filter(None, (_overhead(t, "nptm_masks"), _overhead(t, "torch_prune_hooks"))))  # noqa: E731
    return Case(spec, device, timed, note=note, keep=[dense, masked, hooked, x, y])


def build_pruned_inference(spec: Spec, device: str) -> Case:
    name, config = spec.params
    (prune_channels,) = _pruning("prune_channels")
    from nptm.models import filter_preset

    dense = W.nptm_models().build_model(name, num_classes=10).to(device).eval()
    pruned = prune_channels(dense, "l1_filters", filter_preset(name, config)).to(device).eval()
    return inference_case(spec, device, dense, pruned, _batch(device)[0])


def inference_case(spec: Spec, device: str, dense, pruned, x) -> Case:
    """Eval forwards of ``x`` through the pruned and the dense model, noted with the FLOPs speedup."""
    from nptm.models import count_flops

    ratio = count_flops(dense, tuple(x.shape[1:])) / count_flops(pruned, tuple(x.shape[1:]))

    def forward(m):
        with torch.inference_mode():
            m(x)

    forward(pruned), forward(dense)  # untimed first calls: oneDNN builds its kernels for each new shape
    timed = {"pruned": Timed(lambda: forward(pruned)), "dense": Timed(lambda: forward(dense))}
    note = lambda t: f"measured {t['dense'] / t['pruned']:.2f}x vs FLOPs {ratio:.2f}x" if {"dense", "pruned"} <= set(t) else None  # noqa: E731
    return Case(spec, device, timed, note=note, keep=[dense, pruned, x])


def build(spec: Spec, device: str) -> Case:
    return {"train_step": build_train_step, "pruned_inference": build_pruned_inference}[spec.op](spec, device)


def test_end_to_end(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)

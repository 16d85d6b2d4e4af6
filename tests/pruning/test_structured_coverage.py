"""Structured pruning on the issue's model list: 30% of every prunable group, 0% identical, top scores kept,
params/FLOPs as the kept counts predict, save -> load, torch.export, and Torch-Pruning's outputs for the
same kept channels. Tiny inputs, eval mode, no grads."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from nptm import load_pruned, save_pruned
from nptm.models import build_model, count_flops, count_params
from nptm.pruning.structured import kept_count, select_channels, trace_channels
from nptm.pruning.structured.shrink import shrink_graph

TORCHVISION = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_large",
               "efficientnet_b0", "regnet_y_400mf", "densenet121", "vgg16_bn", "shufflenet_v2_x1_0", "convnext_tiny",
               "squeezenet1_1"]
NPTM = ["resnet20", "resnet56", "vgg16"]
NO_TORCH_PRUNING = {"shufflenet_v2_x1_0"}  # Torch-Pruning 1.6 fails on channel_shuffle's reshape (ZeroDivisionError)


def build(name: str, randomize_bn) -> nn.Module:
    torch.manual_seed(0)
    m = build_model(name, 10) if name in NPTM else getattr(torchvision.models, name)(num_classes=10)
    return randomize_bn(m).eval()


def kept_along(s, keep_by_id, uf) -> int:
    """Entries left along slice ``s``'s dim: the kept channels of each segment's group (x inner, / conv groups)."""
    n = 0
    for gid, start, length in s.label.segs:
        k = keep_by_id.get(uf.find(gid))
        n += length if k is None else int(((k >= start) & (k < start + length)).sum())
    return n * s.label.inner // s.conv_groups


def l1_reference(model, group) -> np.ndarray:
    mods = dict(model.named_modules())
    return sum(np.abs(mods[p].weight.detach().double().numpy()).reshape(group.size, -1).sum(1) for p in group.producers)


def top_reference(scores: np.ndarray, k: int, blocks: int) -> list[int]:
    per = scores.reshape(blocks, -1)
    return sorted(int(b * per.shape[1] + i) for b in range(blocks) for i in np.argsort(-per[b], kind="stable")[: k // blocks])


def torch_pruning_model(model, graph, keep, x):
    tp = pytest.importorskip("torch_pruning")
    ref = copy.deepcopy(model)
    with warnings.catch_warnings(), torch.enable_grad():  # it traces through autograd
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(ref, x, verbose=False)
    mods = dict(ref.named_modules())
    for g in graph.groups:
        if g.name in keep:
            removed = sorted(set(range(g.size)) - set(keep[g.name].tolist()))
            fn = tp.prune_linear_out_channels if isinstance(mods[g.name], nn.Linear) else tp.prune_conv_out_channels
            dg.get_pruning_group(mods[g.name], fn, removed).prune()
    return ref.eval()


@pytest.mark.parametrize("name", TORCHVISION + NPTM)
@torch.no_grad()
def test_structured_coverage(name, tmp_path, randomize_bn):
    model = build(name, randomize_bn)
    x = torch.randn(1, 3, 32, 32)
    dense_out = model(x)
    graph = trace_channels(model, x)
    prunable = [g for g in graph.groups if g.prunable]
    assert prunable and all(g.reason for g in graph.groups if g not in prunable)

    # 0%: bit-identical outputs
    assert torch.equal(shrink_graph(model, graph, select_channels(model, "l1_filters", 0.0, graph=graph))(x), dense_out)

    # 30% of every prunable group: the kept counts, the highest L1 scores (per block for grouped convs)
    keep = select_channels(model, "l1_filters", 0.3, graph=graph)
    for g in prunable:
        k = int(g.size * 0.7) // g.blocks * g.blocks or g.blocks
        assert k == kept_count(g.size, 0.3, 1, g.blocks)
        assert keep[g.name].numel() == k if k < g.size else g.name not in keep
    for g in prunable[:: max(1, len(prunable) // 6)]:  # a spread of groups: exact score order
        if g.name in keep:
            assert keep[g.name].tolist() == top_reference(l1_reference(model, g), keep[g.name].numel(), g.blocks), g.name
    pruned = shrink_graph(model, graph, keep).eval()
    out = pruned(x)
    assert out.shape == dense_out.shape and torch.isfinite(out).all()

    # params and FLOPs fall as the kept counts predict
    keep_by_id = {g.id: keep[g.name] for g in graph.groups if g.name in keep}
    dims = {}
    for s in graph.slices:
        dims.setdefault(s.tensor, {})[s.dim] = kept_along(s, keep_by_id, graph.uf)
    state = dict(model.named_parameters())
    expected_params = sum(math.prod(dims.get(n, {}).get(d, size) for d, size in enumerate(p.shape)) for n, p in state.items())
    assert count_params(pruned)[0] == expected_params < count_params(model)[0]
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    macs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: macs.__setitem__(n, o.numel() * m.weight[0].numel()))
             for n, m in layers.items()]
    model(x)
    for h in hooks:
        h.remove()
    weight_fraction = {n: pruned.get_submodule(n).weight.numel() / m.weight.numel() for n, m in layers.items()}
    expected_flops = sum(macs[n] * weight_fraction[n] for n in layers)
    assert count_flops(pruned, (3, 32, 32)) == pytest.approx(expected_flops, rel=1e-9)

    # save -> load on a fresh instance: identical outputs
    save_pruned(pruned, tmp_path / "m.pt")
    fresh = copy.deepcopy(model)
    for p in fresh.parameters():
        p.zero_()
    loaded = load_pruned(fresh, tmp_path / "m.pt").eval()
    assert torch.equal(loaded(x), out)

    torch.export.export(pruned, (x,))

    # Torch-Pruning's model for the same kept channels (grouped convs: the same local channels in every block,
    # the only pattern it supports)
    if name not in NO_TORCH_PRUNING:
        same, ours = keep, out
        if any(g.blocks > 1 for g in graph.groups if g.name in keep):
            same = {}
            for g in graph.groups:
                if g.name in keep:
                    per, idx = g.size // g.blocks, keep[g.name]
                    local = idx[idx < per]
                    same[g.name] = (local[None, :] + per * torch.arange(g.blocks)[:, None]).reshape(-1)
            ours = shrink_graph(model, graph, same).eval()(x)
        torch.testing.assert_close(ours, torch_pruning_model(model, graph, same, x)(x), rtol=1e-4, atol=1e-5)

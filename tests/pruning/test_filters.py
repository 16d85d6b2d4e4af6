import numpy as np
import pytest
import torch
from torch import nn

import nptm.ops
from nptm.models import build_model, count_flops, count_params
from nptm.pruning import (
    counts_from_state_dict, filter_counts, filter_groups, prune_filters, select_filters, shrink_filters, shrink_to_counts,
)

# Li et al.'s ResNet-56 configs, written out independently of the library: (skipped layers, stage ratios).
CONFIGS = {"A": ({16, 20, 38, 54}, [0.1, 0.1, 0.1]), "B": ({16, 18, 20, 34, 38, 54}, [0.6, 0.3, 0.1])}


def randomized(name, seed=0, in_channels=3):
    """A model with random BN affine parameters and running statistics (eval outputs depend on all of them)."""
    torch.manual_seed(seed)
    m = build_model(name, 10, in_channels)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m.double().eval()


@pytest.mark.parametrize("config", ["A", "B"])
def test_resnet56_config_shapes(config):
    m = randomized("resnet56")
    pruned = prune_filters(m, "resnet56", "l1", config)
    skip, ratios = CONFIGS[config]
    blocks = [b for stage in (pruned.layer1, pruned.layer2, pruned.layer3) for b in stage]
    for i, block in enumerate(blocks):
        planes = (16, 32, 64)[i // 9]
        width = planes if 2 * i + 2 in skip else int(planes * (1 - ratios[i // 9]))
        assert block.conv1.weight.shape[0] == width and block.bn1.num_features == width
        assert block.bn1.weight.shape == block.bn1.running_var.shape == block.bn1.running_mean.shape == (width,)
        assert block.conv2.weight.shape[:2] == (planes, width) and block.conv2.in_channels == width
        assert block.bn2.num_features == planes  # residual widths untouched
    # MACs drop by exactly the removed filters' conv1 outputs and conv2 inputs
    dense_macs = count_flops(m, (3, 32, 32))
    removed = 0
    for i, block in enumerate(blocks):
        planes, hw = (16, 32, 64)[i // 9], (32 * 32, 16 * 16, 8 * 8)[i // 9]
        in_planes = planes // 2 if i in (9, 18) else planes
        removed += (planes - block.conv1.out_channels) * (in_planes + planes) * 9 * hw
    assert count_flops(pruned, (3, 32, 32)) == dense_macs - removed > 0
    assert count_params(pruned)[0] < count_params(m)[0]
    # reference selection: numpy argsort of the L1 norms, the largest kept (as res56prune.py)
    keep = select_filters(m, "resnet56", "l1", config)
    for name, idx in keep.items():
        l1 = np.abs(m.get_submodule(name).weight.detach().numpy()).sum(axis=(1, 2, 3))
        ref = np.sort(np.argsort(l1)[::-1][: idx.numel()])
        assert idx.tolist() == ref.tolist(), name


def _masked_dense(model, arch, keep):
    """The dense model with pruned filters zeroed and their BN channels set to output exactly zero."""
    dense = build_model(arch, 10, 1 if arch == "digits_net" else 3).double().eval()
    dense.load_state_dict(model.state_dict())
    groups = {g.conv: g for g in filter_groups(dense, arch)}
    with torch.no_grad():
        for name, idx in keep.items():
            conv = dense.get_submodule(name)
            drop = torch.ones(conv.out_channels, dtype=torch.bool)
            drop[idx] = False
            conv.weight[drop] = 0
            bn = dense.get_submodule(groups[name].bn)
            bn.weight[drop] = 0
            bn.bias[drop] = 0
    return dense


CASES = [
    ("resnet56", "A", "l1"), ("resnet56", "B", "random"), ("resnet20", 0.5, "l1"), ("vgg16", "A", "l1"),
    ("digits_net", 0.6, "l1"), ("digits_net", 0.6, "random"), ("resnet18", 0.4, "random"),
    ("resnet50", 0.3, "l1"),
]


@pytest.mark.parametrize("arch,ratios,method", CASES)
def test_pruned_model_equals_masked_dense(arch, ratios, method):
    ic, size = {"digits_net": (1, 8), "resnet18": (3, 16), "resnet50": (3, 16)}.get(arch, (3, 32))
    m = randomized(arch, in_channels=ic)
    keep = select_filters(m, arch, method, ratios, generator=torch.Generator().manual_seed(3))
    assert {n: i.numel() for n, i in keep.items()} == filter_counts(m, arch, ratios)
    pruned = shrink_filters(m, arch, keep).eval()
    x = torch.randn(2, ic, size, size, dtype=torch.float64)
    expected = _masked_dense(m, arch, keep)(x)
    out = pruned(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    assert count_params(pruned)[0] < count_params(m)[0]


def test_random_filters_same_counts_seeded():
    m = randomized("resnet56")
    l1 = select_filters(m, "resnet56", "l1", "B")
    r1 = select_filters(m, "resnet56", "random", "B", generator=torch.Generator().manual_seed(0))
    r2 = select_filters(m, "resnet56", "random", "B", generator=torch.Generator().manual_seed(0))
    r3 = select_filters(m, "resnet56", "random", "B", generator=torch.Generator().manual_seed(1))
    assert {n: i.numel() for n, i in r1.items()} == {n: i.numel() for n, i in l1.items()}
    assert all(torch.equal(r1[n], r2[n]) for n in r1)
    assert any(not torch.equal(r1[n], r3[n]) for n in r1)
    assert any(not torch.equal(r1[n], l1[n]) for n in r1)


def test_one_batched_gather(monkeypatch):
    m = randomized("vgg16")
    calls = []
    real = nptm.ops.gather_channels
    monkeypatch.setattr(nptm.ops, "gather_channels", lambda t: (calls.append(t), real(t))[1])
    prune_filters(m, "vgg16", "l1", 0.5)
    assert len(calls) == 1
    # 13 convs (weights, 12 of them sliced on both dims at once) + 13 BNs x 4 + the classifier input
    assert len(calls[0]) == 13 + 13 * 4 + 1


def test_input_model_untouched_and_checkpoint_roundtrip():
    m = randomized("resnet56")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    pruned = prune_filters(m, "resnet56", "l1", "B").eval()
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    sd = pruned.state_dict()
    counts = counts_from_state_dict(m, "resnet56", sd)
    assert counts == filter_counts(m, "resnet56", "B")
    rebuilt = shrink_to_counts(build_model("resnet56", 10).double(), "resnet56", counts).eval()
    rebuilt.load_state_dict(sd)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(rebuilt(x), pruned(x))


def test_bad_arguments():
    m = build_model("resnet20", 10)
    with pytest.raises(ValueError, match="supported"):
        prune_filters(m, "resnet21", "l1", 0.5)
    with pytest.raises(ValueError, match="not a resnet56"):
        prune_filters(m, "resnet56", "l1", "A")
    with pytest.raises(ValueError, match="not a vgg16"):
        prune_filters(build_model("digits_net", 10, 1), "vgg16", "l1", 0.5)
    with pytest.raises(ValueError, match="no PFEC config"):
        prune_filters(m, "resnet20", "l1", "A")
    with pytest.raises(ValueError, match="method"):
        prune_filters(m, "resnet20", "taylor", 0.5)
    with pytest.raises(ValueError, match="ratios"):
        prune_filters(m, "resnet20", "l1", 1.0)
    assert min(filter_counts(m, "resnet20", 0.99).values()) == 1  # at least one filter kept

"""PFEC (filter pruning) presets on the structured engine: exactly the published pruned architectures."""
import numpy as np
import pytest
import torch
from torch import nn

from nptm.models import build_model, count_flops, count_params, filter_preset
from nptm.pruning.structured import prune_channels, select_channels, trace_channels

# Li et al.'s ResNet-56 configs, written out independently of the library: (skipped layers, stage ratios).
CONFIGS = {"A": ({16, 20, 38, 54}, [0.1, 0.1, 0.1]), "B": ({16, 18, 20, 34, 38, 54}, [0.6, 0.3, 0.1])}


def randomized(randomize_bn, name):
    torch.manual_seed(0)
    return randomize_bn(build_model(name, 10)).double().eval()


@pytest.mark.parametrize("config", ["A", "B"])
def test_resnet56_config_shapes(config, randomize_bn):
    m = randomized(randomize_bn, "resnet56")
    preset = filter_preset("resnet56", config)
    pruned = prune_channels(m, "l1_filters", preset)
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
    keep = select_channels(m, "l1_filters", preset)
    assert keep
    for name, idx in keep.items():
        l1 = np.abs(m.get_submodule(name).weight.detach().numpy()).sum(axis=(1, 2, 3))
        ref = np.sort(np.argsort(l1)[::-1][: idx.numel()])
        assert idx.tolist() == ref.tolist(), name


@pytest.mark.parametrize("config,stage_ratios,skip", [
    ("A", (0.5, 0.0, 0.0), {36}), ("B", (0.5, 0.4, 0.3), {36, 38, 74}),
    ("C", (0.5, 0.5, 0.5), {36, 38, 74}), ("D", (0.5, 0.6, 0.7), {36, 38, 74}),
])
def test_resnet110_configs(config, stage_ratios, skip):
    m = build_model("resnet110", 10)
    pruned = prune_channels(m, "l1_filters", filter_preset("resnet110", config))
    blocks = [b for stage in (pruned.layer1, pruned.layer2, pruned.layer3) for b in stage]
    widths = [b.conv1.out_channels for b in blocks]
    expected = [(16, 32, 64)[i // 18] if 2 * i + 2 in skip else int((16, 32, 64)[i // 18] * (1 - stage_ratios[i // 18]))
                for i in range(54)]
    assert widths == expected
    assert [b.conv2.out_channels for b in blocks] == [(16, 32, 64)[i // 18] for i in range(54)]


def test_vgg16_config_a(randomize_bn):
    m = randomized(randomize_bn, "vgg16")
    pruned = prune_channels(m, "l1_filters", filter_preset("vgg16", "A"))
    convs = [c for c in pruned.features if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]
    assert [c.in_channels for c in convs[1:]] == [c.out_channels for c in convs[:-1]]
    assert pruned.classifier[0].in_features == 256 and pruned.classifier[0].out_features == 512
    assert all(b.num_features == c.out_channels for b, c in zip([b for b in pruned.features if isinstance(b, nn.BatchNorm2d)], convs))
    assert count_params(pruned)[0] < count_params(m)[0]


def test_random_filters_same_counts_seeded(randomize_bn):
    m = randomized(randomize_bn, "resnet56")
    preset, graph = filter_preset("resnet56", "B"), trace_channels(m)
    l1 = select_channels(m, "l1_filters", preset, graph=graph)
    r1, r2, r3 = (select_channels(m, "random_filters", preset, generator=torch.Generator().manual_seed(s), graph=graph)
                  for s in (0, 0, 1))
    assert {n: i.numel() for n, i in r1.items()} == {n: i.numel() for n, i in l1.items()}
    assert all(torch.equal(r1[n], r2[n]) for n in r1)
    assert any(not torch.equal(r1[n], r3[n]) for n in r1)
    assert any(not torch.equal(r1[n], l1[n]) for n in r1)


def test_unknown_presets():
    with pytest.raises(ValueError, match="no PFEC config 'A' for resnet20"):
        filter_preset("resnet20", "A")
    with pytest.raises(ValueError, match="configs: A, B, C, D"):
        filter_preset("resnet110", "E")

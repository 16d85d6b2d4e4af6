"""Channel groups of hand-written graphs (branch, concat, shared layer, grouped convs), refusals, and the
pruned model against the dense one with the pruned channels zeroed."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nptm.ops
from nptm.models import build_model
from nptm.pruning.structured import (
    UnsupportedModel, channel_groups, kept_count, prune_channels, select_channels, shrink, trace_channels,
)


class Branchy(nn.Module):
    """A stem, two branches through one shared conv, a concat (with the stem) under one BN, a grouped and a
    depthwise conv, and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.p, self.q = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.Conv2d(8, 6, 1, bias=False)
        self.shared = nn.Conv2d(6, 4, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.mix = nn.Conv2d(16, 12, 1)
        self.grouped, self.bn2 = nn.Conv2d(12, 12, 3, padding=1, groups=3, bias=False), nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        u, v = self.shared(F.relu(self.p(x))), self.shared(F.relu(self.q(x)))
        y = F.relu(self.bn1(torch.cat([u, v, x], 1)))
        y = F.relu(self.bn2(self.grouped(F.relu(self.mix(y)))))
        y = F.relu(self.dw(y)) + y
        return self.head(y.mean((2, 3)))


def masked_dense(model, graph, keep):
    """The dense model with every pruned channel's producer rows, biases and BN scale/shift zeroed: all its ops
    map 0 to 0 per channel, so it computes what the pruned model computes."""
    dense = copy.deepcopy(model)
    by_id = {g.id: keep[g.name] for g in graph.groups if g.name in keep}
    with torch.no_grad():
        for s in graph.slices:
            if s.dim != 0:
                continue
            drop, pos = [], 0
            for gid, start, n in s.label.segs:
                k = by_id.get(graph.uf.find(gid))
                if k is not None:
                    drop += [pos + c - start for c in range(start, start + n) if c not in k.tolist()]
                pos += n
            if drop and not s.tensor.endswith(("running_mean", "running_var")):
                dense.get_parameter(s.tensor)[drop] = 0
    return dense


def groups_by_name(model, x):
    return {g.name: g for g in channel_groups(model, x)}


def test_branchy_groups():
    m, x = Branchy().eval(), torch.randn(1, 3, 8, 8)
    groups = groups_by_name(m, x)
    assert set(groups) == {"stem", "p", "shared", "mix", "grouped", "head"}
    assert groups["p"].producers == ("p", "q")  # coupled through the shared conv's input
    assert ("shared.weight", 1) in groups["p"].members and ("bn1.weight", 0) in groups["shared"].members
    assert groups["stem"].prunable and ("bn1.running_var", 0) in groups["stem"].members
    assert groups["mix"].blocks == 3 and groups["grouped"].blocks == 3
    assert groups["grouped"].producers == ("grouped", "dw")  # depthwise and residual add follow its channels
    assert not groups["head"].prunable and "output" in groups["head"].reason


@pytest.mark.parametrize("ratio,round_to", [(0.4, 1), (0.5, 1), (0.3, 2)])
def test_branchy_equals_masked_dense(ratio, round_to, randomize_bn):
    torch.manual_seed(0)
    m, x = randomize_bn(Branchy()).double().eval(), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    graph = trace_channels(m, x[:1])
    keep = select_channels(m, "l1_filters", ratio, round_to=round_to, graph=graph)
    for g in graph.groups:
        if g.prunable:
            k = kept_count(g.size, ratio, round_to, g.blocks)
            assert k % round_to == 0 and k % g.blocks == 0 and k >= 1
            assert (keep[g.name].numel() if g.name in keep else g.size) == k
    assert {"p", "shared", "stem", "mix", "grouped"} <= set(keep)
    pruned = prune_channels(m, "l1_filters", ratio, example_input=x[:1], round_to=round_to).eval()
    assert pruned.shared.in_channels == keep["p"].numel() and pruned.bn1.num_features == 2 * keep["shared"].numel() + keep["stem"].numel()
    assert pruned.dw.groups == pruned.dw.out_channels == keep["grouped"].numel() and pruned.grouped.groups == 3
    torch.testing.assert_close(pruned(x), masked_dense(m, graph, keep)(x), rtol=1e-10, atol=1e-12)


def test_one_batched_gather_and_input_untouched(monkeypatch, randomize_bn):
    m = randomize_bn(Branchy()).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    calls, real = [], nptm.ops.gather_channels
    monkeypatch.setattr(nptm.ops, "gather_channels", lambda t: (calls.append(t), real(t))[1])
    prune_channels(m, "l1_filters", 0.5, example_input=torch.randn(1, 3, 8, 8))
    assert len(calls) == 1 and len(calls[0]) > 10
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_shrink_checks_keep():
    m, x = Branchy().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="not a channel group"):
        shrink(m, {"bn1": torch.arange(3)}, example_input=x)
    with pytest.raises(ValueError, match="distinct indices"):
        shrink(m, {"stem": torch.tensor([0, 0, 1])}, example_input=x)
    with pytest.raises(ValueError, match="same number of channels in each of its 3 blocks"):
        shrink(m, {"mix": torch.tensor([0, 1, 4, 8])}, example_input=x)
    with pytest.raises(ValueError, match="kept whole"):
        shrink(m, {"head": torch.arange(3)}, example_input=x)
    out = shrink(m, {"mix": torch.tensor([1, 5, 9])}, example_input=x)
    assert out.mix.out_channels == 3 and out.grouped.in_channels == 3 and out.grouped.weight.shape[1] == 1


def test_ratios_by_layer_and_ignore():
    m, x = Branchy().eval(), torch.randn(1, 3, 8, 8)
    pruned = prune_channels(m, "l1_filters", {"q": 0.5}, example_input=x)  # q's group: p and q together
    assert pruned.p.out_channels == pruned.q.out_channels == 3 and pruned.stem.out_channels == 8
    pruned = prune_channels(m, "l1_filters", 0.5, example_input=x, ignore=("<classifier>", "stem", "gr*"))
    assert pruned.stem.out_channels == 8 and pruned.grouped.out_channels == 12 and pruned.mix.out_channels == 6
    with pytest.raises(ValueError, match="kept whole .*stem is ignored"):
        prune_channels(m, "l1_filters", {"stem": 0.5}, example_input=x, ignore=("stem",))
    with pytest.raises(ValueError, match="produce no channel group"):
        prune_channels(m, "l1_filters", {"bn1": 0.5}, example_input=x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_channels(m, "l1_filters", 1.0, example_input=x)
    with pytest.raises(ValueError, match="scores weights, not channels"):
        prune_channels(m, "magnitude", 0.5, example_input=x)


class ChannelsIntoBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.per_channel, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(1, 1, 3), nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        y = self.per_channel(y.reshape(n * c, 1, h, w)).reshape(n, c, -1)
        return self.head(y.mean(2))


def test_channels_into_batch_refused():
    with pytest.raises(UnsupportedModel, match=r"reshape .*forward.*moves channels into the batch dimension"):
        prune_channels(ChannelsIntoBatch(), "l1_filters", 0.3, example_input=torch.randn(1, 3, 8, 8))


def test_cifar_resnet_residual_stream_kept_whole():
    groups = channel_groups(build_model("resnet20", 10), torch.randn(1, 3, 32, 32))
    whole = {g.name: g.reason for g in groups if not g.prunable}
    assert {g.name for g in groups if g.prunable} == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}
    assert "padded along channels" in whole["conv1"] and "output" in whole["fc"]


def test_training_flags_restored_and_untraceable_model_refused():
    m = Branchy().train()
    m.bn1.eval()
    channel_groups(m, torch.randn(1, 3, 8, 8))
    assert m.training and m.stem.training and not m.bn1.training

    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UnsupportedModel, match="cannot trace DataDependent"):
        channel_groups(DataDependent(), torch.randn(1, 3, 4, 4))


class WithAuxHead(nn.Module):
    """A training-only auxiliary head (as GoogLeNet's) reading the pruned channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.aux, self.head = nn.Conv2d(3, 8, 3), nn.Linear(8, 2), nn.Linear(8, 2)

    def forward(self, x):
        y = F.relu(self.conv(x)).mean((2, 3))
        return (self.head(y), self.aux(y)) if self.training else self.head(y)


def test_training_only_branch_is_pruned_too():
    m = WithAuxHead().eval()
    pruned = prune_channels(m, "l1_filters", 0.5, example_input=torch.randn(1, 3, 8, 8))
    assert not pruned.training and pruned.aux.in_features == pruned.head.in_features == pruned.conv.out_channels == 4
    main, aux = pruned.train()(torch.randn(2, 3, 8, 8))
    assert main.shape == aux.shape == (2, 2)
    with pytest.raises(ValueError, match=r"example input \(1, 3, 2, 2\) does not run through WithAuxHead"):
        channel_groups(m, torch.randn(1, 3, 2, 2))

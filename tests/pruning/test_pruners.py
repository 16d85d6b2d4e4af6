"""The pruner registry: properties, criteria as pruners, pruning through scores, channel selection."""
import pytest
import torch
from torch import nn

from nptm import ops
from nptm.models import build_model
from nptm.pruning import PRUNERS, Pruner, prunable_weights
from nptm.pruning.criteria import CRITERIA
from nptm.pruning.criteria.lamp import lamp_scores
from nptm.pruning.pruners import soft_prune_channels_
from nptm.pruning.structured import select_channels
from nptm.utils.registry import UnknownChoice


def test_properties():
    assert set(CRITERIA.names()) <= set(PRUNERS.names())  # every criterion is a pruner
    p = {n: PRUNERS[n] for n in ("magnitude", "layer_magnitude", "lamp", "random", "l1_filters", "taylor", "hrank",
                                 "random_filters", "gmp", "sfp")}
    assert [n for n, x in p.items() if x.structured] == ["l1_filters", "taylor", "hrank", "random_filters", "sfp"]
    assert [n for n, x in p.items() if x.needs_data] == ["taylor", "hrank"]
    assert [n for n, x in p.items() if x.during_training] == ["gmp", "sfp"]
    assert [n for n, x in p.items() if x.random] == ["random", "random_filters"]
    assert (p["layer_magnitude"].criterion, p["layer_magnitude"].algorithm) == ("magnitude", "layer")
    assert (p["lamp"].algorithm, p["taylor"].algorithm, p["gmp"].criterion) == ("global", "channels", "magnitude")
    with pytest.raises(UnknownChoice, match="unknown pruner 'l3'; choices: .*lamp"):
        PRUNERS["l3"]
    with pytest.raises(ValueError, match="unknown pruning algorithm"):
        Pruner("x", "magnitude", "sometimes")


def _two_convs():
    model = nn.Sequential(nn.Conv2d(1, 1, (1, 4), bias=False), nn.Conv2d(1, 1, (1, 2), bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([2.0, 2.0, 2.0, 2.0]).reshape(1, 1, 1, 4))
        model[1].weight.copy_(torch.tensor([1.0, 1.5]).reshape(1, 1, 1, 2))
    return model


def test_lamp_pruner_prunes_the_lowest_lamp_scores():
    model = _two_convs()
    pruned, masks = PRUNERS["lamp"].prune(model, 2)  # two weights: LAMP scores 1/4 (conv 0) and 1/3.25 (conv 1)
    assert masks["0.weight"].flatten().tolist() == [False, True, True, True]
    assert masks["1.weight"].flatten().tolist() == [False, True]
    assert pruned[0].weight.flatten().tolist() == [0.0, 2.0, 2.0, 2.0] and model[0].weight.flatten()[0] == 2.0
    _, mag = PRUNERS["magnitude"].prune(model, 2, max_layer_sparsity=1.0)  # magnitude empties conv 1 (allowed)
    assert mag["1.weight"].flatten().tolist() == [False, False]
    with pytest.raises(ValueError, match=r"every weight of 1\.weight"):  # and is refused by default
        PRUNERS["magnitude"].prune(model, 2)
    _, layer = PRUNERS["layer_magnitude"].prune(model, 0.5)  # half of each layer
    assert [int(m.sum()) for m in layer.values()] == [2, 1]


def test_lamp_on_a_real_model_is_the_global_topk_of_its_scores():
    model = build_model("digits_net", 10, 1)
    params = prunable_weights(model)
    _, masks = PRUNERS["lamp"].prune(model, 0.8)
    expected = ops.global_magnitude_masks(list(params.values()), 0.8, scores=[lamp_scores(w) for w in params.values()])
    assert all(torch.equal(masks[n], e) for n, e in zip(params, expected))
    # a second LAMP step keeps the first step's prunes and prunes 50% of the rest
    pruned, _ = PRUNERS["lamp"].prune(model, 0.8)
    _, again = PRUNERS["lamp"].prune(pruned, 0.5, masks=masks)
    alive = masks.nonzero()
    assert all(bool((~masks[n] <= ~again[n]).all()) for n in masks) and again.nonzero() == alive - round(0.5 * alive)


def _batches(n=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("name", ["taylor", "hrank", "l1_filters"])
def test_channel_pruners_keep_the_highest_scores(name):
    model = build_model("digits_net", 10, 1)
    loader = _batches()
    keep = select_channels(model, name, 0.5, example_input=loader[0][0][:1], loader=loader)  # group -> kept channels
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    params = {f"{n}.weight": m.weight for n, m in convs.items()}
    scores = CRITERIA[name]().scores(model, params, loader=loader)
    for n, conv in convs.items():
        k = conv.out_channels // 2
        s = scores[f"{n}.weight"]
        assert keep[n].tolist() == sorted(keep[n].tolist()) and len(keep[n]) == k
        dropped = torch.ones(conv.out_channels, dtype=torch.bool)
        dropped[keep[n]] = False
        assert s[keep[n]].min() >= s[dropped].max()
    pruned, masks = PRUNERS[name].prune(model, 0.5, example_input=loader[0][0][:1], loader=loader)
    assert masks is None and [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)] == \
        [c.out_channels // 2 for c in convs.values()]
    assert pruned(loader[0][0]).shape == (8, 10)


def test_soft_prune_zeroes_what_removal_would_remove():
    model = build_model("digits_net", 10, 1)
    x = torch.zeros(1, 1, 8, 8)
    keep = select_channels(model, "l2_filters", 0.25, example_input=x)
    soft_prune_channels_(model, "l2_filters", 0.25, example_input=x)
    assert len(keep) == 3
    for n, idx in keep.items():
        norms = model.get_submodule(n).weight.flatten(1).norm(dim=1)
        assert torch.nonzero(norms).flatten().tolist() == idx.tolist()
    again = select_channels(model, "l2_filters", 0.25, example_input=x)  # the zeroed filters score lowest
    assert all(torch.equal(again[n], keep[n]) for n in keep)
    # removing the zeroed channels changes nothing while BN maps zero to zero (its initial statistics)
    hard, _ = PRUNERS["sfp"].prune(model.eval(), 0.25, example_input=x)
    images = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in hard.parameters()) < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(hard.eval()(images), model(images))

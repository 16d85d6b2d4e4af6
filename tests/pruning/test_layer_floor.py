"""Pruning that cannot quietly wreck a model: spare_classifier, and a global criterion that would empty a layer is
refused (naming it) or held at max_layer_sparsity's floor."""
import math

import pytest
import torch
from torch import nn

from nptm.pruning import PRUNERS, prunable_weights, prune_unstructured


def net(scale_fc: float = 1e-3) -> nn.Module:
    """A small net whose classifier's weights are far smaller than the convs': a global top-k empties it."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(8, 4))
    with torch.no_grad():
        m[5].weight.mul_(scale_fc)
    return m


def test_a_layer_that_would_be_emptied_is_refused_by_name():
    m = net()
    before = {n: w.detach().clone() for n, w in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"every weight of (\S+, )*5\.weight.*max_layer_sparsity"):
        prune_unstructured(m, "magnitude", 0.8, include_linear=True)
    assert all(torch.equal(before[n], w) for n, w in m.state_dict().items())  # nothing was pruned


@pytest.mark.parametrize("criterion", ["magnitude", "lamp", "random"])
def test_max_layer_sparsity_keeps_a_floor_and_the_global_count(criterion):
    m = net()
    masks = prune_unstructured(m, criterion, 0.9, include_linear=True, max_layer_sparsity=0.98,
                               generator=torch.Generator().manual_seed(1))
    total = sum(w.numel() for w in prunable_weights(m, True).values())
    assert sum(int(mk.count_nonzero()) for mk in masks.values()) == total - round(0.9 * total)
    for n, mk in masks.items():
        assert int(mk.count_nonzero()) >= math.ceil(0.02 * mk.numel()), n
        assert int(m.get_parameter(n)[~mk].count_nonzero()) == 0
    # the classifier keeps its largest weights
    fc, keep = m[5].weight.detach().abs().flatten(), masks["5.weight"].flatten()
    assert fc[keep].min() >= fc[~keep].max() or criterion != "magnitude"


def test_a_floor_that_leaves_too_little_to_prune_says_so():
    with pytest.raises(ValueError, match="max_layer_sparsity=0.5: prune less"):
        prune_unstructured(net(), "magnitude", 0.9, include_linear=True, max_layer_sparsity=0.5)


def test_max_layer_sparsity_one_allows_empty_layers_and_bad_values_are_refused():
    masks = prune_unstructured(net(), "magnitude", 0.95, include_linear=True, max_layer_sparsity=1.0)
    assert int(masks["5.weight"].count_nonzero()) == 0
    with pytest.raises(ValueError, match=r"max_layer_sparsity must be in \[0, 1\]"):
        prune_unstructured(net(), "magnitude", 0.5, max_layer_sparsity=1.5)


def test_spare_classifier_leaves_the_output_layer_dense():
    m = net()
    masks = prune_unstructured(m, "magnitude", 0.5, include_linear=True, spare_classifier=True)
    assert list(masks) == ["0.weight", "2.weight"] and bool((m[5].weight != 0).all())
    pruned, pm = PRUNERS["magnitude"].prune(net(), 0.5, include_linear=True, spare_classifier=True)
    assert list(pm) == ["0.weight", "2.weight"] and torch.equal(pruned[5].weight, net()[5].weight)


def test_the_floor_holds_through_the_emulated_cuda_kernel(monkeypatch):
    """The floor is +inf scores: the CUDA kernel's code (run by the CPU emulator) keeps them too."""
    monkeypatch.setattr(torch.ops.nptm, "global_magnitude_masks", torch.ops.nptm._emu_global_magnitude_masks)
    masks = prune_unstructured(net(), "magnitude", 0.9, include_linear=True, max_layer_sparsity=0.98)
    assert all(int(m.count_nonzero()) >= math.ceil(0.02 * m.numel()) for m in masks.values())

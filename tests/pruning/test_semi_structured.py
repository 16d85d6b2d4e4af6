"""N:M masks: the pattern in every group, the top-k within each group (ties by position), layers left dense, old
masks, and the nm pruner through the study."""
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from nptm.pruning import PRUNERS, prune_unstructured
from nptm.pruning.semi_structured import n_m_mask, parse_pattern


def _reference(scores, n, m):
    """Per group, pruned = the n smallest (earlier first among equals), by plain Python sorting."""
    rows = scores.reshape(scores.shape[0], -1).tolist()
    keep = []
    for row in rows:
        out = []
        for g in range(0, len(row), m):
            group = row[g:g + m]
            pruned = set(sorted(range(m), key=lambda i: (group[i], i))[:n])
            out += [i not in pruned for i in range(m)]
        keep.append(out)
    return torch.tensor(keep).reshape(scores.shape)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (4, 8), (0, 4)]), st.integers(1, 6), st.integers(1, 4),
       st.sampled_from(["random", "ties", "zeros", "inf"]), st.integers(0, 2**31 - 1))
def test_n_lowest_of_every_m(pattern, rows, groups, kind, seed):
    n, m = pattern
    g = torch.Generator().manual_seed(seed)
    shape = (rows, groups * m)
    scores = {"random": torch.randn(shape, generator=g), "ties": torch.randint(0, 3, shape, generator=g).float(),
              "zeros": torch.zeros(shape), "inf": torch.randn(shape, generator=g).masked_fill(
                  torch.rand(shape, generator=g) < 0.3, float("inf"))}[kind]
    keep = n_m_mask(scores, n, m)
    assert torch.equal(keep, _reference(scores, n, m))
    assert (keep.reshape(rows, groups, m).sum(-1) == m - n).all()


def test_conv_weights_group_along_the_flattened_input_and_odd_sizes_stay_dense():
    w = torch.randn(8, 4, 3, 3)  # in * kh * kw = 36: groups of 4
    keep = n_m_mask(w.abs(), 2, 4)
    assert torch.equal(keep, _reference(w.abs(), 2, 4)) and keep.float().mean() == 0.5
    odd = torch.randn(8, 3, 1, 1)  # 3 inputs: no whole group of 4
    assert n_m_mask(odd.abs(), 2, 4).all()


def test_old_masks_stay_pruned_and_nan_is_refused():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    old = torch.tensor([[False, True, True, True]])
    assert n_m_mask(scores, 2, 4, old).tolist() == [[False, True, True, False]]
    sparser = torch.tensor([[False, True, False, False]])  # 3 of 4 already pruned: the group keeps only 1
    assert n_m_mask(scores, 2, 4, sparser).tolist() == sparser.tolist()
    with pytest.raises(ValueError, match="NaN"):
        n_m_mask(torch.tensor([[1.0, float("nan"), 0.0, 2.0]]), 2, 4)


@pytest.mark.parametrize("text", ["2", "4:2", "a:b", "2:2"])
def test_bad_patterns(text):
    with pytest.raises(ValueError):
        parse_pattern(text)


def test_nm_pruner_masks_linear_and_conv_weights_as_semi_structured_tensors_need():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.LazyLinear(16))
    model(torch.randn(1, 4, 6, 6))
    pruned, masks = PRUNERS["nm"].prune(model, "2:4", include_linear=True)
    for name, mask in masks.items():
        w = pruned.get_parameter(name)
        groups = (w != 0).reshape(w.shape[0], -1, 4)
        assert (groups.sum(-1) <= 2).all() and mask.float().mean() == 0.5, name
    assert torch.equal(next(iter(masks.values())), n_m_mask(model[0].weight.abs(), 2, 4))


def test_nm_after_magnitude_keeps_every_pruned_weight_pruned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 16))
    first = prune_unstructured(model, "magnitude", 0.8, include_linear=True)  # most groups of 4 have > 2 zeros
    old = {n: m.clone() for n, m in first.items()}
    second = prune_unstructured(model, "magnitude", 0, masks=first, pattern="2:4")
    for name, mask in second.items():
        assert not (mask & ~old[name]).any(), f"{name}: a pruned weight was revived"
        assert (model.get_parameter(name)[~mask] == 0).all()
        groups = mask.reshape(mask.shape[0], -1, 4)
        assert (groups.sum(-1) <= 2).all() and (groups.sum(-1) < 2).any()  # some groups keep fewer than N


def test_nm_through_the_study(tmp_path):
    from nptm.study.cli import main

    out = tmp_path / "out"
    assert main(["--out", str(out), "--pruner", "nm,magnitude", "--schedules", "FT", "--seeds", "0,", "--epochs", "1",
                 "--retrain-epochs", "1", "--quiet"]) == 0
    runs = {r["run"]: r for r in json.loads((out / "results.json").read_text())}
    nm = runs["s0/nm-2:4/FT"]
    assert nm["sparsity_target"] == "2:4" and abs(nm["sparsity"] - 0.5) < 0.02 and "s0/magnitude-0.9/FT" in runs

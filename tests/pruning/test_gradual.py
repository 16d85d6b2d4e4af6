"""GMP's cubic ramp and its mask growth."""
import pytest
import torch

from nptm.models import build_model
from nptm.pruning import Masks, prunable_weights
from nptm.pruning.gradual import GMPRamp, prune_to_sparsity


def test_ramp_by_hand():
    ramp = GMPRamp.over(0.8, 100, 0.1, 0.5, steps=4)  # t0 = 10, t_end = 50, dt = 10
    assert (ramp.start, ramp.end, ramp.steps) == (10, 50, 4)
    got = {t: ramp.sparsity_at(t) for t in range(101) if ramp.sparsity_at(t) is not None}
    expected = {20: 0.8 * (1 - 0.75 ** 3), 30: 0.8 * (1 - 0.5 ** 3), 40: 0.8 * (1 - 0.25 ** 3), 50: 0.8}
    assert got.keys() == expected.keys() and all(got[t] == pytest.approx(expected[t]) for t in got)
    assert GMPRamp.over(0.5, 30, 0.0, 1.0, iters_per_epoch=10).steps == 3  # default: one step per epoch
    with pytest.raises(ValueError):
        GMPRamp(1.0, 0, 10, 2)


def test_prune_to_sparsity_grows_the_masks_in_place():
    model = build_model("digits_net", 10, 1)
    params = prunable_weights(model)
    n = sum(w.numel() for w in params.values())
    masks = Masks.ones(params)
    same = masks["features.0.weight"]
    prune_to_sparsity(model, masks, 0.3)
    first = {k: m.clone() for k, m in masks.items()}
    assert masks.nonzero() == n - round(0.3 * n) and masks["features.0.weight"] is same
    with torch.no_grad():  # weights that regrow in value do not come back: they stay pruned
        for w in params.values():
            w.add_(torch.rand_like(w) * 10)
        masks.apply(model)
    prune_to_sparsity(model, masks, 0.6)
    assert masks.nonzero() == n - round(0.6 * n)
    assert all(bool((masks[k] <= first[k]).all()) for k in masks)
    assert all(int(w[~masks[k]].count_nonzero()) == 0 for k, w in params.items())

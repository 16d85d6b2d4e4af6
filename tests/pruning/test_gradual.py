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


def test_window_starting_at_zero_prunes_from_the_first_steps_and_ends_at_the_target():
    ramp = GMPRamp.over(0.9, 40, 0.0, 0.5, iters_per_epoch=5)  # window 0..20, 4 steps (one per epoch)
    assert ramp.iterations == (5, 10, 15, 20)
    assert ramp.sparsity_at(0) is None and ramp.level_at(4) == 0.0
    assert ramp.sparsity_at(5) == pytest.approx(0.9 * (1 - 0.75 ** 3))
    assert ramp.sparsity_at(20) == 0.9 and ramp.level_at(40) == 0.9  # exactly the target, and it stays


def test_window_of_one_epoch_prunes_once_to_the_target():
    ramp = GMPRamp.over(0.7, 30, 1 / 3, 2 / 3, iters_per_epoch=10)  # iterations 10..20
    assert (ramp.steps, ramp.iterations) == (1, (20,))
    assert ramp.sparsity_at(20) == 0.7 and ramp.level_at(19) == 0.0 and ramp.level_at(25) == 0.7


@pytest.mark.parametrize("window", [(0.0, 0.0), (0.5, 0.5)])
def test_empty_window_is_refused(window):
    with pytest.raises(ValueError, match="GMP window .* has 0 iterations but needs at least one per pruning step"):
        GMPRamp.over(0.5, 100, *window, iters_per_epoch=10)


def test_more_steps_than_window_iterations_is_refused():
    with pytest.raises(ValueError, match=r"has 5 iterations but needs at least one per pruning step \(6\)"):
        GMPRamp.over(0.5, 100, 0.1, 0.15, steps=6)
    ramp = GMPRamp.over(0.5, 100, 0.1, 0.15, steps=5)  # one step per iteration: every step on its own iteration
    assert ramp.iterations == (11, 12, 13, 14, 15) and ramp.sparsity_at(15) == 0.5


@pytest.mark.parametrize("total,start,end,steps", [(97, 0.0, 1.0, 13), (1000, 0.1, 0.75, 37), (50, 0.3, 0.62, 16)])
def test_every_step_on_its_own_iteration_and_the_last_at_the_end(total, start, end, steps):
    ramp = GMPRamp.over(0.95, total, start, end, steps=steps)
    its = ramp.iterations
    assert len(set(its)) == steps and list(its) == sorted(its) and its[0] >= 1 and its[-1] == ramp.end
    levels = [ramp.sparsity_at(t) for t in its]
    assert levels == sorted(levels) and levels[-1] == 0.95


def test_ramp_reaches_the_exact_target_count_in_a_model():
    model = build_model("digits_net", 10, 1)
    params = prunable_weights(model)
    n = sum(w.numel() for w in params.values())
    masks = Masks.ones(params)
    ramp = GMPRamp.over(0.83, 12, 0.0, 1.0, steps=12)
    for t in range(1, 13):
        s = ramp.sparsity_at(t)
        prune_to_sparsity(model, masks, s)
    assert masks.nonzero() == n - round(0.83 * n)

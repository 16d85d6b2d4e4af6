import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nptm.schedules import ORIGINAL_SCHEDULES, SCHEDULES, OriginalSchedule, allr_scale, build_schedule, set_lr

CIFAR = ORIGINAL_SCHEDULES["cifar"]
close = pytest.approx


def test_original_cifar():
    assert (CIFAR.T, CIFAR.eta_max) == (160, 0.1)
    assert CIFAR.eta_min == close(1e-3)
    assert CIFAR.lr_at(0) == 0.1 and CIFAR.lr_at(79.99) == 0.1
    assert CIFAR.lr_at(80) == close(0.01) and CIFAR.lr_at(119.9) == close(0.01)
    assert CIFAR.lr_at(120) == close(1e-3) and CIFAR.lr_at(160) == close(1e-3)
    with pytest.raises(ValueError):
        CIFAR.lr_at(161)


def test_original_imagenet_and_warmup():
    imnet = ORIGINAL_SCHEDULES["imagenet"]
    assert imnet.lr_at(29.99) == 0.1 and imnet.lr_at(30) == close(0.01) and imnet.lr_at(60) == close(1e-3)
    warm = OriginalSchedule(0.1, 90, milestones=(1 / 3, 2 / 3), warmup_epochs=5)
    assert warm.lr_at(0) == 0 and warm.lr_at(2.5) == close(0.05) and warm.lr_at(5) == close(0.1)
    with pytest.raises(ValueError):
        OriginalSchedule(0.1, 90, milestones=(30, 60))


def test_ft_is_constant_eta_min():
    s = build_schedule("FT", CIFAR, 40, 10)
    assert s.total_iters == 400 and s.name == "FT"
    assert all(lr == close(1e-3) for lr in s.lrs()) and s.momentum(0) is None


def test_lrw_replays_the_tail():
    s = build_schedule("LRW", CIFAR, 100, 10)  # replays epochs 60..160
    assert s.lr(0) == 0.1 and s.lr(199) == 0.1  # epoch 79.9
    assert s.lr(200) == close(0.01) and s.lr(599) == close(0.01)  # epochs 80, 119.9
    assert s.lr(600) == close(1e-3) and s.lr(999) == close(1e-3)
    assert build_schedule("LRW", CIFAR, 40, 10).lr(0) == close(1e-3)
    with pytest.raises(ValueError, match="replays"):
        build_schedule("LRW", CIFAR, 161, 10)


def test_slr_warmup_then_resampled_steps():
    s = build_schedule("SLR", CIFAR, 10, 10)  # N = 100, W = 10, steps at 10 + 45, 10 + 67.5
    assert s.lr(0) == close(1e-3)
    assert s.lr(5) == close((1e-3 + 0.1) / 2)  # cosine ramp midpoint
    assert s.lr(10) == 0.1 and s.lr(54) == 0.1
    assert s.lr(55) == close(0.01) and s.lr(77) == close(0.01)
    assert s.lr(78) == close(1e-3) and s.lr(99) == close(1e-3)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(11, 400), pct=st.sampled_from([0.1, 0.2, 0.3]), peak=st.sampled_from([0.1, 0.05]), cycle=st.booleans())
def test_clr_matches_torch_onecycle(n, pct, peak, cycle):
    original = OriginalSchedule(peak, 160)
    s = build_schedule("CLR", original, n, 1, warmup_frac=pct, cycle_momentum=cycle)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=peak, total_steps=n, pct_start=pct, div_factor=100, final_div_factor=100,
        anneal_strategy="cos", cycle_momentum=cycle,
    )
    for it in range(n):
        assert s.lr(it) == close(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), it
        if cycle:
            assert s.momentum(it) == close(opt.param_groups[0]["momentum"], rel=1e-12), it
        else:
            assert s.momentum(it) is None
        opt.step()
        sched.step()


def test_clr_hand_values():
    s = build_schedule("CLR", CIFAR, 101, 1)  # E1 = 9.1
    assert s.lr(0) == close(1e-3)
    assert s.lr(9) == close(1e-3 + (0.1 - 1e-3) * (1 - math.cos(math.pi * 9 / 9.1)) / 2)
    assert s.lr(100) == close(1e-5)


def test_llr_and_allr():
    s = build_schedule("LLR", CIFAR, 10, 10)  # N = 100, W = 10
    assert [s.lr(i) for i in (0, 5, 10, 55, 99)] == close([0, 0.05, 0.1, 0.05, 0.1 / 90])
    a = build_schedule("ALLR", CIFAR, 10, 10, peak_scale=0.4)
    assert [a.lr(i) for i in (0, 5, 10, 55)] == close([0, 0.02, 0.04, 0.02])
    with pytest.raises(ValueError):
        build_schedule("ALLR", CIFAR, 10, 10, peak_scale=0)


def test_none_and_bad_names():
    s = build_schedule("none", CIFAR, 40, 10)
    assert s.total_iters == 0 and s.lrs() == []
    with pytest.raises(ValueError):
        s.lr(0)
    with pytest.raises(ValueError, match="FT.*ALLR"):
        build_schedule("OneCycle", CIFAR, 40, 10)
    assert set(SCHEDULES) == {"FT", "LRW", "SLR", "CLR", "LLR", "ALLR", "none"}
    with pytest.raises(ValueError):
        build_schedule("LLR", CIFAR, 40, 10).lr(400)


def test_set_lr_sets_every_group():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 5.0}], lr=1.0, momentum=0.9)
    s = build_schedule("CLR", CIFAR, 10, 10, cycle_momentum=True)
    assert set_lr(opt, s, 0) == close(1e-3)
    assert [g["lr"] for g in opt.param_groups] == close([1e-3, 1e-3])
    assert [g["momentum"] for g in opt.param_groups] == close([0.95, 0.95])
    set_lr(opt, build_schedule("FT", CIFAR, 10, 10), 3)
    assert [g["momentum"] for g in opt.param_groups] == close([0.95, 0.95])  # FT leaves momentum alone
    adam = torch.optim.Adam([a], betas=(0.9, 0.99))
    set_lr(adam, s, 0)
    assert adam.param_groups[0]["betas"] == close((0.95, 0.99))


def test_allr_scale_known_values():
    before = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    after = [torch.tensor([0.0, 0.0]), torch.tensor([[4.0]])]
    d, d1, d2 = allr_scale(before, after, 0.5, 40, 160)
    assert d1 == close(3 / (5 * math.sqrt(0.5))) and d2 == 0.25 and d == d1
    d, d1, d2 = allr_scale(before, before, 0.5, 80, 160)
    assert (d, d1, d2) == (0.5, 0.0, 0.5)
    d, _, _ = allr_scale(before, after, 0.1, 40, 160)  # d1 > 1 is clipped
    assert d == 1.0
    with pytest.raises(ValueError):
        allr_scale(before, after[:1], 0.5, 40, 160)


def test_allr_scale_after_magnitude_pruning_is_at_most_one():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1000, generator=g)
    k = 300
    pruned = w.clone()
    pruned[w.abs().argsort()[:k]] = 0
    _, d1, _ = allr_scale([w], [pruned], k / 1000, 1, 160)
    assert 0 < d1 <= 1

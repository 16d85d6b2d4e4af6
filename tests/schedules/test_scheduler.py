import io

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR

from nptm.schedules import (ORIGINAL_SCHEDULES, SCHEDULES, OriginalSchedule, RetrainLR, StepwiseOriginal, build_schedule,
                            retrain_scheduler)

CIFAR = ORIGINAL_SCHEDULES["cifar"]
NAMES = [n for n in SCHEDULES if n != "none"]


def sgd(lr=0.5, groups=1):
    return torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]} for _ in range(groups)], lr=lr, momentum=0.9)


def run(opt, sched, steps):
    """The lr (and momentum) each optimizer step used, stepping as a training loop does."""
    seen = []
    for _ in range(steps):
        seen.append([(g["lr"], g["momentum"]) for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_scheduler_gives_exactly_the_schedule(name):
    d = 0.4 if name == "ALLR" else None
    ref = build_schedule(name, CIFAR, 7, 5, peak_scale=d or 1.0, cycle_momentum=True)
    opt = sgd(groups=2)
    sched = retrain_scheduler(opt, name, original=CIFAR, retrain_steps=35, steps_per_epoch=5, d=d, cycle_momentum=True)
    seen = run(opt, sched, 35)
    for it, groups in enumerate(seen):
        assert all(lr == ref.lr(it) for lr, _ in groups), (it, groups)
        m = ref.momentum(it)
        assert all(mom == (0.9 if m is None else m) for _, mom in groups)
    assert sched.get_last_lr() == [ref.lr(34)] * 2  # stepping past the end keeps the last lr


@pytest.mark.parametrize("name", ["SLR", "CLR", "ALLR"])
def test_state_dict_round_trip_mid_run(name):
    kw = dict(original=CIFAR, retrain_steps=40, steps_per_epoch=4, d=0.3, cycle_momentum=True)
    opt = sgd()
    whole = run(opt, retrain_scheduler(opt, name, **kw), 40)
    opt = sgd()
    first = retrain_scheduler(opt, name, **kw)
    head = run(opt, first, 17)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    opt2 = sgd()
    second = retrain_scheduler(opt2, name, **kw)
    second.load_state_dict(torch.load(buf, weights_only=True))
    for g, g2 in zip(opt.param_groups, opt2.param_groups):  # the optimizer's own state_dict carries these
        g2.update(lr=g["lr"], momentum=g["momentum"])
    assert head + run(opt2, second, 23) == whole
    other = retrain_scheduler(sgd(), name, **{**kw, "d": 0.5, "retrain_steps": 41})
    with pytest.raises(ValueError, match="not of"):
        other.load_state_dict(first.state_dict())


def test_allr_d_scales_the_peak_and_is_required():
    llr = build_schedule("LLR", CIFAR, 10, 10)
    sched = retrain_scheduler(sgd(), "ALLR", original=CIFAR, retrain_steps=100, steps_per_epoch=10, d=0.25)
    assert sched.schedule.lrs() == [0.25 * x for x in llr.lrs()]
    with pytest.raises(ValueError, match="allr_scale"):
        retrain_scheduler(sgd(), "ALLR", original=CIFAR, retrain_steps=100, steps_per_epoch=10)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="choices: FT, LRW"):
        retrain_scheduler(sgd(), "OneCycle", original=CIFAR, retrain_steps=10)
    with pytest.raises(ValueError, match="no iterations"):
        retrain_scheduler(sgd(), "none", original=CIFAR, retrain_steps=10)
    with pytest.raises(ValueError, match="length in steps"):
        retrain_scheduler(sgd(), "FT", original=lambda t: 0.1, retrain_steps=10)
    with pytest.raises(ValueError, match="retrain_steps"):
        retrain_scheduler(sgd(), "FT", original=CIFAR, retrain_steps=0)
    with pytest.raises(ValueError, match="replays"):
        retrain_scheduler(sgd(), "LRW", original=[0.1] * 5, retrain_steps=6)
    with pytest.raises(ValueError, match="positive maximum"):
        StepwiseOriginal(())


def cosine(steps, lr=0.2):
    return StepwiseOriginal.from_torch(lambda opt: CosineAnnealingLR(opt, T_max=steps), steps, lr)


def one_cycle(steps, lr=0.2):
    return StepwiseOriginal.from_torch(lambda opt: OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25), steps, lr)


@pytest.mark.parametrize("make", [cosine, one_cycle])
def test_ft_lrw_slr_on_recorded_torch_originals(make):
    o = make(200)
    lrs = o.lrs
    assert o.T == 200 and o.eta_max == max(lrs) and o.eta_min == lrs[-1]
    ft = retrain_scheduler(sgd(), "FT", original=o, retrain_steps=30).schedule
    assert set(ft.lrs()) == {lrs[-1]}
    lrw = retrain_scheduler(sgd(), "LRW", original=o, retrain_steps=30).schedule
    assert lrw.lrs() == list(lrs[-30:])
    slr = retrain_scheduler(sgd(), "SLR", original=o, retrain_steps=50).schedule.lrs()
    assert slr[0] == pytest.approx(o.eta_min) and slr[5] == o.eta_max  # 10 % warm-up: 5 steps
    decay = lrs[o.peak:]  # the original after its peak, resampled to the remaining 45 steps
    assert slr[5:] == [decay[int(i * len(decay) / 45 + 1e-9)] for i in range(45)]
    assert all(a >= b for a, b in zip(slr[5:], slr[6:]))  # no second warm-up inside a one-cycle original


def test_one_cycle_original_records_torch_exactly():
    o = one_cycle(40)
    opt = sgd(lr=0.2)
    sched = OneCycleLR(opt, max_lr=0.2, total_steps=40, pct_start=0.25)
    assert [lr for (lr, _), in run(opt, sched, 39)] == list(o.lrs[:39])
    assert o.peak == 9  # OneCycleLR's peak step: pct_start * total_steps - 1


def test_callable_and_list_originals_match_the_recorded_one():
    fn = lambda t: 0.1 * (1 - t / 100)  # noqa: E731  (a linear decay given per step)
    by_fn = retrain_scheduler(sgd(), "SLR", original=fn, original_steps=100, retrain_steps=20).schedule.lrs()
    by_list = retrain_scheduler(sgd(), "SLR", original=[fn(t) for t in range(100)], retrain_steps=20).schedule.lrs()
    assert by_fn == by_list and by_fn[2] == 0.1 and by_fn[-1] < by_fn[3]


def test_epoch_original_equals_its_per_step_recording():
    # an OriginalSchedule in epochs and the same curve recorded per step give the same LRW/FT lrs
    o = OriginalSchedule(0.1, 20, milestones=(0.5, 0.75))
    per_step = StepwiseOriginal.from_function(lambda t: o.lr_at(t / 10), 200)
    for name in ("FT", "LRW", "LLR"):
        a = retrain_scheduler(sgd(), name, original=o, retrain_steps=60, steps_per_epoch=10).schedule.lrs()
        b = retrain_scheduler(sgd(), name, original=per_step, retrain_steps=60).schedule.lrs()
        assert a == pytest.approx(b), name


def test_retrain_lr_is_an_lr_scheduler():
    sched = retrain_scheduler(sgd(), "LLR", original=CIFAR, retrain_steps=10)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler) and isinstance(sched, RetrainLR)

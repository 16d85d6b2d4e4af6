"""OriginalSchedule's linear decay (ffcv-imagenet's warm-up + linear schedule) and what retraining derives from it."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nptm.study.presets import ffcv_imagenet_lr
from nptm.schedules import OriginalSchedule, build_schedule


@settings(max_examples=200, deadline=None)
@given(epochs=st.integers(1, 100), warmup_share=st.floats(0.01, 0.99), lr=st.floats(1e-3, 10),
       at=st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_linear_matches_ffcv_imagenet(epochs, warmup_share, lr, at):
    w = warmup_share * epochs
    o = OriginalSchedule(lr, epochs, warmup_epochs=w, warmup_start=1e-4, decay="linear")
    for a in at:
        e = a * epochs
        assert o.lr_at(e) == pytest.approx(ffcv_imagenet_lr(e, lr, epochs, peak_epoch=w), rel=1e-9, abs=1e-12 * lr)  # rounding near the zero at the end


def test_linear_eta_and_retraining_schedules():
    o = OriginalSchedule(0.5, 16, warmup_epochs=2, warmup_start=1e-4, decay="linear")
    assert o.eta_max == 0.5 and o.eta_min == pytest.approx(0.5 / 14) == pytest.approx(o.lr_at(15))
    assert OriginalSchedule(0.5, 1, warmup_epochs=0.5, decay="linear").eta_min == 0.5  # at most lr
    ipe, t_rt = 5, 4
    assert set(build_schedule("FT", o, t_rt, ipe).lrs()) == {o.eta_min}
    lrw = build_schedule("LRW", o, t_rt, ipe).lrs()
    np.testing.assert_allclose(lrw, [0.5 * (4 - it / ipe) / 14 for it in range(t_rt * ipe)], rtol=1e-12)
    slr = build_schedule("SLR", o, t_rt, ipe).lrs()  # warm-up over 10 % (2 iterations), then 0.5 -> 0 linearly
    np.testing.assert_allclose(slr[2:], [0.5 * (1 - (it - 2) / 18) for it in range(2, 20)], rtol=1e-12)
    assert slr[0] == pytest.approx(o.eta_min)


def test_warmup_start_and_bad_arguments():
    step = OriginalSchedule(0.1, 90, milestones=(1 / 3, 2 / 3), warmup_epochs=5, warmup_start=0.5)
    assert step.lr_at(0) == pytest.approx(0.05) and step.lr_at(2.5) == pytest.approx(0.075) and step.lr_at(5) == 0.1
    assert step.lr_at(30) == pytest.approx(0.01) and step.decay == "step"
    with pytest.raises(ValueError, match="unknown decay"):
        OriginalSchedule(0.1, 10, decay="cosine")
    with pytest.raises(ValueError, match="warmup_start"):
        OriginalSchedule(0.1, 10, warmup_epochs=1, warmup_start=2)

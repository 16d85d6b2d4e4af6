"""Original training schedules, per-iteration retraining schedules (a registry: FT, LRW, SLR, CLR, LLR, ALLR,
none; one file each), ALLR's d, and the ``LRScheduler`` adapter for your own training loop."""
from nptm.schedules.original import ORIGINAL_SCHEDULES, Original, OriginalSchedule, StepwiseOriginal, as_original
from nptm.schedules.retrain import SCHEDULES, Schedule, build_schedule, make_schedule, set_lr
from nptm.schedules import ft, lrw, slr, clr, llr, allr, none  # noqa: E402,F401  (register, in this order)
from nptm.schedules.allr import allr_scale
from nptm.schedules.scheduler import RetrainLR, retrain_scheduler

__all__ = [
    "Original", "OriginalSchedule", "StepwiseOriginal", "ORIGINAL_SCHEDULES", "as_original", "Schedule", "SCHEDULES",
    "build_schedule", "make_schedule", "set_lr", "allr_scale", "RetrainLR", "retrain_scheduler",
]

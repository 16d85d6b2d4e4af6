"""Original training schedules, per-iteration retraining schedules (a registry: FT, LRW, SLR, CLR, LLR, ALLR,
none; one file each, discovered), ALLR's d, and the ``LRScheduler`` adapter for your own training loop."""
from nptm.schedules.original import ORIGINAL_SCHEDULES, Original, OriginalSchedule, StepwiseOriginal, as_original
from nptm.schedules.retrain import (SCHEDULES, RetrainSchedule, Schedule, build_schedule, make_schedule,
                                    retrain_schedule, schedule_kind, set_lr)
from nptm.schedules.allr import allr_factor, allr_scale, norm_drop
from nptm.schedules.scheduler import RetrainLR, retrain_scheduler

__all__ = [
    "Original", "OriginalSchedule", "StepwiseOriginal", "ORIGINAL_SCHEDULES", "as_original", "Schedule", "SCHEDULES",
    "RetrainSchedule", "build_schedule", "make_schedule", "retrain_schedule", "schedule_kind", "set_lr", "allr_factor",
    "allr_scale", "norm_drop", "RetrainLR", "retrain_scheduler",
]

"""Original training schedule, per-iteration retraining schedules (FT, LRW, SLR, CLR, LLR, ALLR) and ALLR's d."""
from nptm.schedules.allr import allr_scale
from nptm.schedules.original import ORIGINAL_SCHEDULES, OriginalSchedule
from nptm.schedules.retrain import SCHEDULES, Schedule, build_schedule, set_lr

__all__ = ["OriginalSchedule", "ORIGINAL_SCHEDULES", "Schedule", "SCHEDULES", "build_schedule", "set_lr", "allr_scale"]

"""nptm: network pruning that matters — fast pruning kernels, pruners and retraining schedules."""

__version__ = "0.1.0"

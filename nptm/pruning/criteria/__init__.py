"""Pruning criteria as plug-ins: one file each, registered in ``CRITERIA`` (third-party packages add theirs
through the ``nptm.criteria`` entry point group)."""
# registered in this order (the order --pruner lists them)
from nptm.pruning.criteria import magnitude, lamp, random, l1_filters, l2_filters, taylor, hrank  # noqa: F401, I001
from nptm.pruning.criteria.base import CRITERIA, Criterion, NoCalibrationData

__all__ = ["CRITERIA", "Criterion", "NoCalibrationData"]

"""Pruning criteria as plug-ins: one file each, registered in ``CRITERIA`` (third-party packages add theirs
through the ``nptm.criteria`` entry point group)."""
from nptm.pruning.criteria import hrank, l1_filters, l2_filters, lamp, magnitude, random, taylor  # noqa: F401  (register)
from nptm.pruning.criteria.base import CRITERIA, Criterion, NoCalibrationData

__all__ = ["CRITERIA", "Criterion", "NoCalibrationData"]

"""Pruning criteria as plug-ins: one file each in this package, registered in ``CRITERIA`` and discovered on the
first lookup (third-party packages add theirs through the ``nptm.criteria`` entry point group)."""
from nptm.pruning.criteria.base import CRITERIA, Criterion, NoCalibrationData

__all__ = ["CRITERIA", "Criterion", "NoCalibrationData"]

"""Pruning criteria as plug-ins: one file each, registered in ``CRITERIA`` (third-party packages add theirs
through the ``nptm.criteria`` entry point group)."""
from nptm.pruning.criteria import l1_filters, magnitude, random  # noqa: F401  (register)
from nptm.pruning.criteria.base import CRITERIA, Criterion

__all__ = ["CRITERIA", "Criterion"]

"""Pruning-stable methods (sparsify during training within the budget T): one file each in this package, registered
in ``SPARSE_TRAINING`` and discovered on the first lookup (third-party packages add theirs through the
``nptm.sparse_training`` entry point group). The contract the study uses is in ``base.py``."""
from nptm.pruning.sparse_training.base import SPARSE_TRAINING, Finished, SparseTraining

__all__ = ["SPARSE_TRAINING", "SparseTraining", "Finished"]

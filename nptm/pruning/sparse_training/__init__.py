"""Pruning-stable methods (sparsify during training within the budget T): one file each, registered in
``SPARSE_TRAINING`` (third-party packages add theirs through the ``nptm.sparse_training`` entry point group).
The contract the study uses is in ``base.py``."""
# registered in this order (the order a CLI lists them)
from nptm.pruning.sparse_training import gsm, dpf, dnw, soft_threshold, cs, lc  # noqa: F401, I001
from nptm.pruning.sparse_training.base import SPARSE_TRAINING, Finished, SparseTraining

__all__ = ["SPARSE_TRAINING", "SparseTraining", "Finished"]

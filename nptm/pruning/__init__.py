"""Pruning: criteria (plug-ins), pruners (criterion + algorithm, ``PRUNERS``), masks and unstructured pruning,
structured channel pruning of any traceable CNN (``nptm.pruning.structured``), and the pruning-stable methods that
sparsify during training (``SPARSE_TRAINING``, ``nptm.pruning.sparse_training``)."""
from nptm.pruning.masks import Masks, prunable_weights
from nptm.pruning.pruners import PRUNERS, Pruner
from nptm.pruning.structured import (
    ChannelGroup, UnsupportedModel, channel_groups, load_pruned, prune_channels, save_pruned, shrink,
)
from nptm.pruning.unstructured import iterative_amounts, prune_unstructured
from nptm.pruning.sparse_training import SPARSE_TRAINING  # noqa: I001  (after the modules it builds on)

__all__ = [
    "prunable_weights", "Masks", "PRUNERS", "Pruner", "prune_unstructured", "iterative_amounts",
    "channel_groups", "prune_channels", "shrink", "save_pruned", "load_pruned", "ChannelGroup", "UnsupportedModel",
    "SPARSE_TRAINING",
]

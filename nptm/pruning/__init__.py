"""Pruning: criteria (plug-ins), pruners (criterion + algorithm), masks, unstructured and structured pruning."""
from nptm.pruning.filters import (
    FILTER_ARCHS,
    PFEC_CONFIGS,
    FilterGroup,
    counts_from_state_dict,
    filter_counts,
    filter_groups,
    prune_filters,
    select_filters,
    shrink_filters,
    shrink_to_counts,
)
from nptm.pruning.masks import Masks, prunable_weights
from nptm.pruning.pruners import PRUNERS, Pruner
from nptm.pruning.unstructured import iterative_amounts, prune_unstructured

__all__ = [
    "prunable_weights", "Masks", "PRUNERS", "Pruner", "prune_unstructured", "iterative_amounts",
    "prune_filters", "select_filters", "shrink_filters", "shrink_to_counts", "filter_counts",
    "filter_groups", "counts_from_state_dict", "FilterGroup", "FILTER_ARCHS", "PFEC_CONFIGS",
]

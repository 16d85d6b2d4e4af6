"""Structured (channel) pruning of any traceable CNN: graph -> channel groups, a criterion-driven pruner,
physical shrinking through ``nptm.ops.gather_channels``, and save/load of pruned models."""
from nptm.pruning.structured.engine import (
    channel_groups, group_ratios, group_scores, kept_count, prune_channels, select_channels, shrink, top_channels,
)
from nptm.pruning.structured.graph import CLASSIFIER, ChannelGroup, UnsupportedModel, trace_channels
from nptm.pruning.structured.saving import load_pruned, read_pruned, save_pruned

__all__ = [
    "channel_groups", "prune_channels", "shrink", "select_channels", "kept_count", "group_ratios", "group_scores",
    "top_channels", "ChannelGroup", "UnsupportedModel", "CLASSIFIER", "trace_channels", "save_pruned", "load_pruned",
    "read_pruned",
]

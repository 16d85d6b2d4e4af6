"""Sparse inference on CPU: ``sparsify`` rewrites a pruned model so that its zero weights save time
(BatchNorm folded, each conv/linear sparse where measured faster, the dense convs through oneDNN where that is
faster, epilogues fused), ``save_sparse`` / ``load_sparse`` keep the result, ``freeze`` runs its graph outside
Python, ``measure_latency``, ``deploy`` and ``deployable`` serve measurements. Built on ``nptm.ops`` (the
``sparse_conv2d`` kernel) and ``nptm.pruning`` (masks)."""
from nptm.sparse.choose import MARGIN, MAX_DENSITY, LayerChoice
from nptm.sparse.dense import DenseConv2d
from nptm.sparse.freezing import freeze
from nptm.sparse.latency import Deployment, Latency, deploy, deployable, measure_latency
from nptm.sparse.modules import SparseConv2d, SparseLinear
from nptm.sparse.saving import SparseFileError, load_sparse, save_sparse
from nptm.sparse.sparsify import sparsify, summary

__all__ = ["sparsify", "freeze", "summary", "save_sparse", "load_sparse", "SparseFileError", "deployable", "measure_latency",
           "SparseConv2d", "SparseLinear", "DenseConv2d", "LayerChoice", "MAX_DENSITY", "MARGIN", "Latency", "Deployment", "deploy"]

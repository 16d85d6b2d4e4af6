"""nptm: network pruning that matters — fast pruning kernels, pruners and retraining schedules."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # save_pruned / load_pruned / sparsify & co. load the compiled ops lazily, so ``import nptm`` stays light
    if name in ("save_pruned", "load_pruned"):
        from nptm.pruning import structured

        return getattr(structured, name)
    if name in ("sparsify", "freeze", "save_sparse", "load_sparse"):
        from nptm import sparse

        return getattr(sparse, name)
    raise AttributeError(f"module 'nptm' has no attribute {name!r}")

"""Training: a loop that only trains (``Trainer``), with evaluation, checkpoints and progress as callbacks, one
``evaluate``, optimizers, precision and torchrun support. The study built on it is ``nptm.study``.

Names load on first use, so ``python -m nptm.train`` can start work before torch is imported."""
import importlib

_WHERE = {"Callback": "nptm.train.loop", "CheckpointError": "nptm.train.checkpoint",
          "DistributedError": "nptm.train.distributed", "Trainer": "nptm.train.loop",
          "TrainingDiverged": "nptm.train.loop", "evaluate": "nptm.train.evaluate",
          "load_checkpoint": "nptm.train.checkpoint", "save_checkpoint": "nptm.train.checkpoint"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nptm.train' has no attribute {name!r}")

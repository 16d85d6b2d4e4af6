"""Training: a loop that only trains (``Trainer``), with evaluation, checkpoints and progress as callbacks, one
``evaluate``, optimizers, precision and torchrun support. The study built on it is ``nptm.study``."""
from nptm.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nptm.train.distributed import DistributedError
from nptm.train.evaluate import evaluate
from nptm.train.loop import Callback, Trainer, TrainingDiverged

__all__ = ["Callback", "CheckpointError", "DistributedError", "Trainer", "TrainingDiverged", "evaluate",
           "load_checkpoint", "save_checkpoint"]

"""The retraining study as a tool: ``python -m nptm.train`` (config, loop, checkpoints, study, results)."""
from nptm.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nptm.train.config import ConfigError, StudyConfig, build_parser, parse_args
from nptm.train.distributed import DistributedError
from nptm.train.evaluate import evaluate
from nptm.train.loop import Callback, Trainer, TrainingDiverged

__all__ = ["Callback", "CheckpointError", "ConfigError", "DistributedError", "StudyConfig", "Trainer", "TrainingDiverged",
           "build_parser", "evaluate", "load_checkpoint", "parse_args", "save_checkpoint"]

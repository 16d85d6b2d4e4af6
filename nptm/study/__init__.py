"""The retraining study as a tool: config and validation, the plan of a study as units, running them (one process,
``--jobs``, shards, submitted job arrays), records, plots and the report. Entry point: ``python -m nptm.train``."""
from nptm.study.config import StudyConfig, build_parser, parse_args
from nptm.utils.errors import ConfigError

__all__ = ["ConfigError", "StudyConfig", "build_parser", "parse_args", "main", "plan_study", "run"]


def __getattr__(name: str):
    if name == "main":
        from nptm.study.cli import main

        return main
    if name == "plan_study":
        from nptm.study.plan import plan_study

        return plan_study
    if name == "run":
        from nptm.study.run import run

        return run
    raise AttributeError(f"module 'nptm.study' has no attribute {name!r}")

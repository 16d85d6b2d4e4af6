"""The retraining study as a tool: config and validation, the plan of a study as units, running them (one process,
``--jobs``, shards, submitted job arrays), records, plots and the report. Entry point: ``python -m nptm.train``.

Names load on first use, so ``nptm.study.jobs`` can start the ``--jobs`` workers' server before torch is imported."""
import importlib

_WHERE = {"ConfigError": "nptm.utils.errors", "StudyConfig": "nptm.study.config", "build_parser": "nptm.study.config",
          "parse_args": "nptm.study.config", "main": "nptm.study.cli", "plan_study": "nptm.study.plan",
          "run": "nptm.study.run"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nptm.study' has no attribute {name!r}")

"""This process's part of a study: the units it runs (all of them, a ``--shard``, a ``--jobs`` worker's, an array
task's) with its own ``StudyContext``, sharing the output folder with every other process of the study."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from nptm.study.config import StudyConfig
from nptm.study.context import StudyContext
from nptm.study.execute import Executor, Shard
from nptm.study.store import UnitStore
from nptm.study.units import Unit
from nptm.train.loop import Callback
from nptm.utils.threads import torch_threads

WORKER_POLL_S = 0.2  # a --jobs worker waiting for another's unit looks this often (the parent reports once all end)


def claimant(cfg: StudyConfig, worker: int | None = None) -> str:
    """How this process names itself in its claims."""
    parts = [f"shard {Shard.parse(cfg.execution.shard)}"] if cfg.execution.shard else []
    parts += [f"worker {worker}"] if worker is not None else []
    parts += [f"slurm job {os.environ['SLURM_JOB_ID']}"] if "SLURM_JOB_ID" in os.environ else []
    return ", ".join(parts)


def run_part(cfg: StudyConfig, out: Path, units: Sequence[Unit], device: torch.device, worker: int | None = None,
             callbacks: Sequence[Callback] = (), ctx: StudyContext | None = None) -> UnitStore:
    """Run what this process takes of ``units`` (its shard's share first, then any ready unit nobody holds) into
    ``out``; returns the unit store it used. ``ctx``: a context to reuse (one is made otherwise)."""
    store = ctx.store if ctx is not None else UnitStore(out, who=claimant(cfg, worker))
    with torch_threads(cfg.training.threads):
        ctx = ctx or StudyContext(cfg, out, device, store, callbacks)
        shard = Shard.parse(cfg.execution.shard) if cfg.execution.shard else None
        poll = {} if worker is None else {"poll_s": WORKER_POLL_S}
        Executor(ctx, units, shard, wait_timeout=cfg.execution.wait_timeout, **poll).run()
    return store

"""Run (or resume, or join) a study in this process, in ``--jobs`` local processes, or as one ``--shard``."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from nptm.study.config import StudyConfig
from nptm.study.context import StudyContext
from nptm.study.execute import Executor, Shard, collect, write_outputs
from nptm.study.folder import CONFIG_FILE, create
from nptm.study.plan import plan_study
from nptm.study.store import UnitStore
from nptm.train import distributed
from nptm.train.distributed import Session
from nptm.train.loop import Callback
from nptm.train.precision import resolve_precision
from nptm.utils.errors import ConfigError


@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def claimant(cfg: StudyConfig, worker: int | None = None) -> str:
    """How this process names itself in its claims."""
    parts = [f"shard {Shard.parse(cfg.execution.shard)}"] if cfg.execution.shard else []
    parts += [f"worker {worker}"] if worker is not None else []
    parts += [f"slurm job {os.environ['SLURM_JOB_ID']}"] if "SLURM_JOB_ID" in os.environ else []
    return ", ".join(parts)


def run(cfg: StudyConfig, out: Path, callbacks: Sequence[Callback] = (), session: Session | None = None,
        worker: int | None = None) -> list[dict[str, Any]]:
    """Run this process's part of the study into ``out``, then merge every finished run into results.json, the
    table and the report (rank 0); returns the records (rank 0; the other ranks return none). ``session``: the distributed session from
    ``distributed.start`` (default: this process alone); ``worker``: the index of a ``--jobs`` worker."""
    session = session or Session(0, 0, 1, distributed.resolve_device(cfg.training.device))
    try:
        resolve_precision(cfg.training.precision, session.device)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None
    plan = plan_study(cfg)
    store = UnitStore(out, who=claimant(cfg, worker))
    with torch_threads(cfg.training.threads):
        ctx = StudyContext(cfg, out, session.device, store, callbacks)
        if worker is None:
            if not (out / CONFIG_FILE).is_file():  # a new study: bad data or checkpoint fail before anything is written
                first = ctx.data(cfg.training.seeds[0])
                if cfg.model.dense_checkpoint:
                    ctx.dense_checkpoint(first)
            distributed.all_ok(lambda: create(cfg, out, plan) if session.rank == 0 else None)
        if cfg.execution.jobs > 1 and worker is None:
            from nptm.study.jobs import run_jobs

            run_jobs(cfg, out)
        else:
            shard = Shard.parse(cfg.execution.shard) if cfg.execution.shard else None
            Executor(ctx, plan, shard, wait_timeout=cfg.execution.wait_timeout).run()
    if session.rank != 0:  # rank 0 alone reads and writes --out (other nodes need not see it)
        return []
    records, missing = collect(out, plan, store)
    if worker is None:
        table = write_outputs(out, records, missing)
        print(table)
        print(f"results: {out / 'results.json'}, {out / 'results.csv'}, table.txt, report.html/.md and plots in {out}")
    return records

"""Run (or resume, or join) a study in this process, in ``--jobs`` local processes, or as one ``--shard``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nptm.study.config import StudyConfig
from nptm.study.context import StudyContext
from nptm.study.folder import CONFIG_FILE, create
from nptm.study.jobs import run_jobs
from nptm.study.outputs import collect, prepare_report, publish
from nptm.study.part import claimant, run_part
from nptm.utils.threads import torch_threads
from nptm.study.plan import plan_study
from nptm.study.store import UnitStore
from nptm.train import distributed
from nptm.train.distributed import Session
from nptm.train.loop import Callback
from nptm.train.precision import resolve_precision
from nptm.utils.errors import ConfigError


def run(cfg: StudyConfig, out: Path, callbacks: Sequence[Callback] = (), session: Session | None = None) \
        -> list[dict[str, Any]]:
    """Run this process's part of the study into ``out``, then merge every finished run into results.json, the
    table and the report (rank 0); returns the records (rank 0; the other ranks return none). ``session``: the
    distributed session from ``distributed.start`` (default: this process alone)."""
    session = session or Session(0, 0, 1, distributed.resolve_device(cfg.training.device))
    try:
        resolve_precision(cfg.training.precision, session.device)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None
    jobs = cfg.execution.jobs > 1
    plan = plan_study(cfg)
    store = UnitStore(out, who=claimant(cfg))
    with torch_threads(cfg.training.threads):
        ctx = StudyContext(cfg, out, session.device, store, callbacks)
        if not (out / CONFIG_FILE).is_file():  # a new study: bad data or checkpoint fail before anything is written
            first = ctx.data(cfg.training.seeds[0])
            if cfg.model.dense_checkpoint:
                ctx.dense_checkpoint(first)
        distributed.all_ok(lambda: create(cfg, out, plan) if session.rank == 0 else None)
    if jobs:
        prepare_report()
        run_jobs(cfg, out)
    else:
        run_part(cfg, out, plan, session.device, ctx=ctx)
    if session.rank != 0:  # rank 0 alone reads and writes --out (other nodes need not see it)
        return []
    table = publish(out, plan, store)
    print(table)
    print(f"results: {out / 'results.json'}, {out / 'results.csv'}, table.txt, report.html/.md and plots in {out}")
    return collect(out, plan, store)[0]

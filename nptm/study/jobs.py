"""``--jobs N``: N local processes run a study's independent units side by side (a workstation, one big node).

Each worker is forked from a server process that imported torch and nptm once (``multiprocessing``'s forkserver):
it inherits no CUDA or OpenMP state and pays no imports, not even those a first unit makes lazily
(``nptm.study.preload``). ``python -m nptm.train --jobs N`` starts the server first, before it imports torch
itself, so the server's imports overlap the parent's checks of the study; this module is light for that.
Workers claim units from the shared output folder like any shard; the parent waits for them, stops them all
when one fails or it is interrupted, and merges the results. A worker's error is printed once, as one line, and
becomes the parent's exit status.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Sequence

PRELOAD = [__name__, "nptm.study.part", "nptm.study.plan", "nptm.study.preload"]  # torch and most of nptm
DATASET_ENV = "NPTM_JOBS_DATASET"  # tells the server (nptm.study.preload) the study's dataset
_context = multiprocessing.get_context("forkserver")


def start_workers_server(dataset: str | None = None) -> None:
    """Start the server that forks the workers, if it is not running; it imports ``PRELOAD`` (and what ``dataset``
    imports when first built) while the caller goes on."""
    from multiprocessing import forkserver

    if dataset:
        os.environ[DATASET_ENV] = dataset
    _context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def start_early(argv: Sequence[str]) -> None:
    """Start the server when the command line (of ``python -m nptm.train``, before its own imports) asks for
    ``--jobs N``, N > 1, without ``--submit``, outside torchrun; otherwise the study starts it after parsing."""
    def value(flag: str) -> str | None:
        for i, arg in enumerate(argv):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg[len(flag) + 1:]
        return None
    jobs = value("--jobs") or ""
    if jobs.isdigit() and int(jobs) > 1 and value("--submit") is None and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        start_workers_server(None if "--resume" in argv else value("--dataset"))


def _worker(config: dict, out: str, index: int) -> None:
    from nptm.study.config import StudyConfig
    from nptm.study.exits import Process, exit_status, interruptible
    from nptm.study.part import run_part
    from nptm.study.plan import plan_study
    from nptm.train.distributed import resolve_device

    cfg = StudyConfig.from_dict(config)
    body = lambda: run_part(cfg, Path(out), plan_study(cfg), resolve_device(cfg.training.device), worker=index)  # noqa: E731
    with interruptible():
        code = exit_status(body, Process(worker=True))
    sys.exit(code)


def run_jobs(cfg, out: Path) -> None:
    """Run the study ``cfg`` (a ``StudyConfig``) into ``out`` in ``cfg.execution.jobs`` workers."""
    from multiprocessing.connection import wait

    from nptm.study.exits import WorkerFailed

    start_workers_server(cfg.data.dataset)
    workers = [_context.Process(target=_worker, args=(cfg.to_dict(), str(out), i), name=f"nptm-worker-{i}")
               for i in range(cfg.execution.jobs)]
    for w in workers:
        w.start()
    try:
        while workers:
            wait([w.sentinel for w in workers], timeout=1.0)  # wakes as soon as one ends
            for w in list(workers):
                if w.exitcode is None:
                    continue
                workers.remove(w)
                if w.exitcode != 0:
                    raise WorkerFailed(w.name, w.exitcode)
    finally:
        for w in workers:  # a failure or an interrupt stops the others; they release their claims
            if w.is_alive():
                w.terminate()
        for w in workers:
            w.join()

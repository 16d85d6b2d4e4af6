"""``--jobs N``: N local processes run a study's independent units side by side (a workstation, one big node).

Each worker is forked from a server process that imported torch and nptm once (``multiprocessing``'s forkserver,
started before the parent touches torch's threads or CUDA): it inherits no CUDA or OpenMP state and pays no imports,
not even those a first unit makes lazily (torch's optimizers import ``torch._dynamo``; the dataset's own, e.g.
scikit-learn for the digits), which the server makes while the parent checks the study.
It claims units from the shared output folder like any shard; the parent waits for the workers, stops them all
when one fails or it is interrupted, and merges the results. A worker's error is printed once, as one line, and
becomes the parent's exit status.
"""
from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

from nptm.study.config import StudyConfig
from nptm.study.exits import Process, WorkerFailed, exit_status, interruptible

PRELOAD = [__name__, "nptm.study.part", "nptm.study.plan",  # what a worker runs: torch and most of nptm
           "torch._dynamo",  # imported by torch.optim's first optimizer: 1-2 s of every worker's first unit
           "nptm.sparse"]  # each run's latency, of its deployed form
_context = multiprocessing.get_context("forkserver")


def start_workers_server(dataset: str | None = None) -> None:
    """Start the server that forks the workers, if it is not running; it imports ``PRELOAD`` and what ``dataset``
    imports when first built (``Dataset.imports``) while the caller goes on."""
    from multiprocessing import forkserver

    from nptm.data import DATASETS

    _context.set_forkserver_preload(PRELOAD + list(DATASETS[dataset].imports if dataset in DATASETS else ()))
    forkserver.ensure_running()


def _worker(config: dict, out: str, index: int) -> None:
    from nptm.study.part import run_part
    from nptm.study.plan import plan_study
    from nptm.train.distributed import resolve_device

    cfg = StudyConfig.from_dict(config)
    body = lambda: run_part(cfg, Path(out), plan_study(cfg), resolve_device(cfg.training.device), worker=index)  # noqa: E731
    with interruptible():
        code = exit_status(body, Process(worker=True))
    sys.exit(code)


def run_jobs(cfg: StudyConfig, out: Path) -> None:
    start_workers_server(cfg.data.dataset)
    workers = [_context.Process(target=_worker, args=(cfg.to_dict(), str(out), i), name=f"nptm-worker-{i}")
               for i in range(cfg.execution.jobs)]
    for w in workers:
        w.start()
    try:
        while workers:
            for w in list(workers):
                w.join(0.2)
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

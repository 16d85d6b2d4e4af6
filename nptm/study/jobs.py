"""``--jobs N``: N local processes run a study's independent units side by side (a workstation, one big node).

Each worker is a fresh process (spawned: no CUDA or OpenMP state inherited) that claims units from the shared
output folder like any shard; the parent waits for them, stops them all when one fails or it is interrupted,
and merges the results. A worker's error is printed once, as one line, and becomes the parent's exit status.
"""
from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

from nptm.study.config import StudyConfig


def _worker(config: dict, out: str, index: int) -> None:
    from nptm.study.cli import Process, exit_status, interruptible
    from nptm.study.run import run

    cfg = StudyConfig.from_dict(config)
    with interruptible():
        code = exit_status(lambda: run(cfg, Path(out), worker=index), Process(worker=True))
    sys.exit(code)


def run_jobs(cfg: StudyConfig, out: Path) -> None:
    from nptm.study.cli import WorkerFailed

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(cfg.to_dict(), str(out), i), name=f"nptm-worker-{i}")
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

"""``python -m nptm.train`` (also ``python -m nptm.study``): the retraining study from the command line (see
``--help``).

With no arguments it runs the default study on scikit-learn's digits. Results never overwrite earlier ones
(``nptm.study.folder``). Bad input (and a failed write) exits with status 2 and one line on stderr; a diverging
loss with 1; a lost torchrun peer with 3; waiting too long for units other processes make with 4;
SIGINT/SIGTERM with 130/143 after saying how to resume (``nptm.study.exits``).

Under ``torchrun`` every process runs this; rank 0 checks the output folder (and reads a resumed study's config)
and shares the outcome, so all ranks stop together on bad input, and only rank 0 prints errors that every rank
shares.
"""
from __future__ import annotations

from typing import Sequence

from nptm.study.config import parse_args
from nptm.study.exits import Process, exit_status, interruptible, leave
from nptm.study.folder import prepare
from nptm.study.validation import check_world_size
from nptm.train import distributed
from nptm.train.loop import Callback
from nptm.utils.errors import ConfigError


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> int:
    proc = Process()

    def body():
        proc.rank, _, proc.world = distributed.env_world()
        cfg, given = parse_args(list(argv) if argv is not None else None)
        if cfg.execution.jobs > 1 and not cfg.execution.submit and proc.world == 1:
            from nptm.study.jobs import start_workers_server

            start_workers_server(None if cfg.output.resume else cfg.data.dataset)  # it imports torch, nptm and
            # the data's libraries while this process checks the study (a resumed study's data is in its folder)
        from nptm.study.run import run

        if not cfg.output.resume:  # before any process waits for the others
            check_world_size(cfg.resolve(), proc.world)
        session = distributed.start(cfg.training.device, cfg.training.dist_timeout)
        cfg, proc.out = distributed.from_rank0(lambda: prepare(cfg, given, proc.world))
        if cfg.execution.submit:
            if proc.world > 1:
                raise ConfigError("--submit runs from one process, not under torchrun")
            from nptm.study.submit import submit

            submit(cfg, proc.out)
        else:
            run(cfg, proc.out, callbacks, session)
        distributed.stop(session)

    with interruptible():
        status = exit_status(body, proc)
    return leave(status, proc.world) if status else status

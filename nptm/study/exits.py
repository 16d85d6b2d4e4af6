"""How a study's process ends: an exit status and one line on stderr for what it raises (bad input and failed
writes 2, a diverging loss 1, a lost torchrun peer 3, waiting too long for others' units 4, SIGINT/SIGTERM 130/143
after saying how to resume), and SIGTERM turned into an exception so the run ends with that message."""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NoReturn

from nptm.study.execute import StudyIncomplete
from nptm.study.folder import CONFIG_FILE
from nptm.train import distributed
from nptm.train.distributed import DeviceError, DistributedError
from nptm.train.loop import TrainingDiverged
from nptm.utils.errors import UserError


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (torchrun stops the other processes with it when one fails)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class WorkerFailed(RuntimeError):
    """A ``--jobs`` worker exited with a non-zero status (it printed why)."""

    def __init__(self, name: str, status: int):
        super().__init__(f"{name} exited with status {status}")
        self.status = status


@contextlib.contextmanager
def interruptible():
    """SIGTERM (and SIGINT) raise ``Interrupted`` so the run ends with a message, not silently."""
    def handler(signum, frame):
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _say(message: str, e: BaseException, rank: int) -> None:
    """One line on stderr; an error every rank shares is printed by rank 0 only, naming the rank it came from."""
    if getattr(e, "shared", False) and rank != 0:
        return
    origin = getattr(e, "origin_rank", rank)
    print(f"nptm.train: error: {f'rank {origin}: ' if origin != rank else ''}{message}", file=sys.stderr, flush=True)


@dataclass
class Process:
    """What the error messages of a process say: its rank, the world size and the study folder (once known)."""

    rank: int = 0
    world: int = 1
    out: Path | None = None
    worker: bool = False  # a --jobs worker: says nothing on an interrupt (its parent does)


def exit_status(body: Callable[[], object], proc: Process) -> int:
    """Run ``body``; map what it raises to an exit status and one line on stderr."""
    resume = lambda: f"; continue with --resume --out {proc.out}" if proc.out is not None and (proc.out / CONFIG_FILE).exists() else ""  # noqa: E731
    try:
        body()
    except DeviceError as e:
        _say(f"--device: {e}", e, proc.rank)
        return 2
    except UserError as e:  # ConfigError, DataError, CheckpointError, ...
        _say(str(e), e, proc.rank)
        return 2
    except OSError as e:  # disk full, permissions, ... while writing results or checkpoints
        what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        _say(f"I/O error: {what} (earlier results are intact{resume()})", e, proc.rank)
        return 2
    except TrainingDiverged as e:
        _say(f"{e}; try a lower --lr", e, proc.rank)
        return 1
    except StudyIncomplete as e:
        _say(str(e), e, proc.rank)
        return 4
    except WorkerFailed as e:
        return e.status
    except DistributedError as e:
        _say(f"{e}{resume()}", e, proc.rank)
        return leave(3, proc.world)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        if not proc.worker:
            print(f"nptm.train: interrupted by {signal.Signals(signum).name}{resume() or ''}", file=sys.stderr, flush=True)
        return 128 + signum
    except RuntimeError as e:
        if proc.world == 1 or not distributed.is_comm_failure(e):
            raise
        _say(f"{distributed.comm_failure(e)}{resume()}", e, proc.rank)
        return leave(3, proc.world)
    return 0


def end(status: int) -> NoReturn:
    """End the command with ``status`` without tearing the interpreter down module by module (0.5-2 s once torch,
    scikit-learn and matplotlib are loaded); the at-exit handlers run and the output is flushed first."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def leave(status: int, world: int) -> int:
    """``status``; a rank that failed leaves at once: the process group's destructors can abort (gloo's
    std::terminate on a pending or timed-out operation), turning the clear error into SIGABRT. A process that
    never joined a group (bad input found first) returns as usual."""
    import torch.distributed as dist

    if world > 1 and dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status

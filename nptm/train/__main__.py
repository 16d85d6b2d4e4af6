"""``python -m nptm.train``: the retraining study from the command line (see ``--help``).

With no arguments it runs the default study on scikit-learn's digits. Results never overwrite
earlier ones: without ``--out`` a fresh ``runs/<timestamp>`` folder is used; an explicit ``--out``
must be new or empty unless ``--resume`` continues the study it holds. Bad input (and a failed write)
exits with status 2 and one line on stderr; a diverging loss with 1; a lost torchrun peer with 3;
SIGINT/SIGTERM with 130/143 after saying how to resume.

Under ``torchrun`` every process runs this; rank 0 checks the output folder (and reads a resumed
study's config) and shares the outcome, so all ranks stop together on bad input, and only rank 0
prints errors that every rank shares.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import torch

from nptm.data import DataError
from nptm.train import distributed
from nptm.train.checkpoint import CheckpointError, atomic_write
from nptm.train.config import RUNTIME, STUDY_SECTIONS, ConfigError, SECTIONS, StudyConfig, parse_args
from nptm.train.distributed import DistributedError, Session
from nptm.train.loop import Callback, TrainingDiverged
from nptm.train.validation import check_world_size, validate

CONFIG_FILE = "config.json"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (torchrun stops the other processes with it when one fails)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
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


def _resume_config(cfg: StudyConfig, given: set[str], out: Path) -> StudyConfig:
    """The saved study's config; flags may change only how it runs (output, device, workers)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: nothing to resume in {out} (no {CONFIG_FILE})")
    try:
        saved = StudyConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: unreadable {path}: {e}") from None
    runtime = {"out", "resume", "quiet", *RUNTIME}
    for sec in STUDY_SECTIONS:
        for name in SECTIONS[sec].__dataclass_fields__:
            if name in given and name not in runtime and getattr(getattr(cfg, sec), name) != getattr(getattr(saved, sec), name):
                raise ConfigError(f"--{name.replace('_', '-')} differs from the study being resumed in {out}")
    return saved.updated({**vars(cfg.output), **{k: getattr(cfg.training if k in vars(cfg.training) else cfg.data, k)
                                                  for k in RUNTIME}})


def prepare(argv: Sequence[str] | None, world_size: int = 1) -> tuple[StudyConfig, Path]:
    """Parse, resolve and validate the config; choose and check the output folder."""
    return _prepare(*parse_args(list(argv) if argv is not None else None), world_size)


def _prepare(cfg: StudyConfig, given: set[str], world_size: int = 1) -> tuple[StudyConfig, Path]:
    o = cfg.output
    if o.resume:
        if not o.out:
            raise ConfigError("--resume needs --out DIR (the study to continue)")
        out = Path(o.out)
        cfg = _resume_config(cfg, given, out)
    else:
        out = Path(o.out) if o.out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        if not o.out:
            while out.exists():
                out = out.with_name(out.name + "+")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out {out} is not an empty folder; pass --resume to continue it or choose another")
    _check_writable(out)
    cfg = cfg.resolve()
    validate(cfg)
    check_world_size(cfg, world_size)
    _check_model(cfg)
    return cfg, out


def _check_writable(out: Path) -> None:
    """Fail early when ``out`` cannot be created or written (the nearest existing ancestor decides)."""
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write there ({existing} is not a writable folder)")


def create_out(cfg: StudyConfig, out: Path) -> None:
    """Create ``out`` (and its checkpoints folder) and record the config; unwritable -> ConfigError."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not cfg.output.resume:
            text = json.dumps(cfg.to_dict(), indent=1).encode()
            atomic_write(out / CONFIG_FILE, lambda f: f.write(text))
        else:
            for stale in [*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")]:  # left by a kill mid-write
                stale.unlink()
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def _check_model(cfg: StudyConfig) -> None:
    from nptm.models import check_model_name

    try:
        check_model_name(cfg.model.model)
    except ValueError as e:
        raise ConfigError(f"--model: {e}") from None
    from nptm.pruning import PRUNERS

    structured = [p for p in cfg.pruning.pruner if PRUNERS[p].structured]
    if structured:  # a model the channel tracer refuses, or a missing preset: fail before training
        from nptm.models import build_model, filter_preset
        from nptm.pruning import prune_channels

        p = cfg.pruning
        try:
            ratios = filter_preset(cfg.model.model, p.filter_config) if p.filter_config else p.sparsity[0]
            prune_channels(build_model(cfg.model.model, 10), "l1_filters", ratios, round_to=p.round_to, ignore=p.ignore)
        except ValueError as e:
            raise ConfigError(f"--pruner {structured[0]}: {e}") from None


def run(cfg: StudyConfig, out: Path, callbacks: Sequence[Callback] = (), session: Session | None = None) -> list[dict]:
    """Run (or resume) the study into ``out``; writes results, table and plots; returns the records.
    ``session``: the distributed session from ``distributed.start`` (default: this process alone)."""
    from nptm.report import build_report
    from nptm.train.results import summary_table, write_results
    from nptm.train.study import Study

    session = session or Session(0, 0, 1, distributed.resolve_device(cfg.training.device))
    threads = torch.get_num_threads()
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    try:
        study = Study(cfg, out, device=session.device, callbacks=callbacks,
                      on_ready=lambda: create_out(cfg, out) if session.rank == 0 else None)
        records = study.run()
    finally:
        torch.set_num_threads(threads)
    if study.rank == 0:
        write_results(out, records)
        table = summary_table(records)
        atomic_write(out / "table.txt", lambda f: f.write((table + "\n").encode()))
        build_report([out], out)  # figures beside results.json, report.html, report.md
        print(table)
        print(f"results: {out / 'results.json'}, {out / 'results.csv'}, table.txt, report.html/.md and plots in {out}")
    return records


def _say(message: str, e: BaseException, rank: int) -> None:
    """One line on stderr; an error every rank shares is printed by rank 0 only, naming the rank it came from."""
    if getattr(e, "shared", False) and rank != 0:
        return
    origin = getattr(e, "origin_rank", rank)
    print(f"nptm.train: error: {f'rank {origin}: ' if origin != rank else ''}{message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> int:
    out, session, rank, world = None, None, 0, 1
    resume = lambda: f"; continue with --resume --out {out}" if out is not None and (out / CONFIG_FILE).exists() else ""  # noqa: E731
    try:
        with _signals_raise():
            rank, _, world = distributed.env_world()
            cfg, given = parse_args(list(argv) if argv is not None else None)
            if not cfg.output.resume:  # before any process waits for the others
                check_world_size(cfg.resolve(), world)
            session = distributed.start(cfg.training.device, cfg.training.dist_timeout)
            cfg, out = distributed.from_rank0(lambda: _prepare(cfg, given, world))
            run(cfg, out, callbacks, session)
            distributed.stop(session)
    except (ConfigError, DataError, CheckpointError) as e:
        _say(str(e), e, rank)
        return 2
    except OSError as e:  # disk full, permissions, ... while writing results or checkpoints
        what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        _say(f"I/O error: {what} (earlier results are intact{resume()})", e, rank)
        return 2
    except TrainingDiverged as e:
        _say(str(e), e, rank)
        return 1
    except DistributedError as e:
        _say(f"{e}{resume()}", e, rank)
        return _lost_peer_exit(world)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"nptm.train: interrupted by {signal.Signals(signum).name}{resume() or ''}", file=sys.stderr, flush=True)
        return 128 + signum
    except RuntimeError as e:
        if world == 1 or not distributed.is_comm_failure(e):
            raise
        _say(f"{distributed.comm_failure(e)}{resume()}", e, rank)
        return _lost_peer_exit(world)
    return 0


def _lost_peer_exit(world: int) -> int:
    """Exit status 3. With a broken process group, leave at once: its destructors can abort (gloo's
    std::terminate on a timed-out operation), turning the clear error into SIGABRT."""
    if world > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    return 3


if __name__ == "__main__":
    sys.exit(main())

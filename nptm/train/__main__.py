"""``python -m nptm.train``: the retraining study from the command line (see ``--help``).

With no arguments it runs the default study on scikit-learn's digits. Results never overwrite
earlier ones: without ``--out`` a fresh ``runs/<timestamp>`` folder is used; an explicit ``--out``
must be new or empty unless ``--resume`` continues the study it holds. Bad input exits with status 2
and one line on stderr; a diverging loss with status 1.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from nptm.data import DataError
from nptm.train.checkpoint import CheckpointError, atomic_write
from nptm.train.config import (STRUCTURED, STUDY_SECTIONS, ConfigError, SECTIONS, StudyConfig, parse_args,
                               validate)
from nptm.train.loop import Callback, TrainingDiverged, dist_info

CONFIG_FILE = "config.json"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here")
    return dev


def _resume_config(cfg: StudyConfig, given: set[str], out: Path) -> StudyConfig:
    """The saved study's config; flags may change only how it runs (output, device, workers)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: nothing to resume in {out} (no {CONFIG_FILE})")
    try:
        saved = StudyConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: unreadable {path}: {e}") from None
    runtime = {"out", "resume", "quiet", "device", "workers", "threads"}
    for sec in STUDY_SECTIONS:
        for name in SECTIONS[sec].__dataclass_fields__:
            if name in given and name not in runtime and getattr(getattr(cfg, sec), name) != getattr(getattr(saved, sec), name):
                raise ConfigError(f"--{name.replace('_', '-')} differs from the study being resumed in {out}")
    return saved.updated({k: v for k, v in {**vars(cfg.output), "device": cfg.training.device,
                                            "workers": cfg.data.workers, "threads": cfg.training.threads}.items()})


def prepare(argv: Sequence[str] | None) -> tuple[StudyConfig, Path]:
    """Parse, resolve and validate the config; choose and check the output folder."""
    cfg, given = parse_args(list(argv) if argv is not None else None)
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
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def _check_model(cfg: StudyConfig) -> None:
    from nptm.models import MODELS

    if cfg.model.model not in MODELS:
        raise ConfigError(f"--model: unknown model {cfg.model.model!r}; choose from {', '.join(MODELS)}")
    structured = [p for p in cfg.pruning.pruner if p in STRUCTURED]
    if structured:  # filter pruning knows only some architectures: try it on a throwaway model
        from nptm.models import build_model
        from nptm.pruning import prune_filters

        try:
            prune_filters(build_model(cfg.model.model, 10, 3), cfg.model.model, "l1",
                          cfg.pruning.filter_config or cfg.pruning.sparsity[0])
        except ValueError as e:
            raise ConfigError(f"--pruner {structured[0]}: {e}") from None


def run(cfg: StudyConfig, out: Path, callbacks: Sequence[Callback] = ()) -> list[dict]:
    """Run (or resume) the study into ``out``; writes results, table and plots; returns the records."""
    from nptm.train.plots import write_plots
    from nptm.train.results import summary_table, write_results
    from nptm.train.study import Study

    device = _device(cfg.training.device)
    threads = torch.get_num_threads()
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    try:
        study = Study(cfg, out, device=device, callbacks=callbacks,
                      on_ready=lambda: create_out(cfg, out) if dist_info()[0] == 0 else None)
        records = study.run()
    finally:
        torch.set_num_threads(threads)
    if study.rank == 0:
        write_results(out, records)
        table = summary_table(records)
        atomic_write(out / "table.txt", lambda f: f.write((table + "\n").encode()))
        write_plots(out, records)
        print(table)
        print(f"results: {out / 'results.json'}, {out / 'results.csv'}, table.txt and plots in {out}")
    return records


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> int:
    out = None
    try:
        cfg, out = prepare(argv)
        run(cfg, out, callbacks)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"nptm.train: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"nptm.train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nptm.train: interrupted; continue with --resume --out {out}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

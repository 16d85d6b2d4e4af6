"""A study's output folder: choosing and checking it, config.json and plan.json, resuming and joining it.

Results never overwrite earlier ones: without ``--out`` a fresh ``runs/<timestamp>`` folder is used; an explicit
``--out`` must be new or empty unless ``--resume`` continues the study it holds. Shards and submitted jobs join
the folder their study's first process created (it must hold the same study).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from nptm.study.config import RUNTIME, SECTIONS, STUDY_SECTIONS, ConfigError, StudyConfig
from nptm.study.execute import write_plan
from nptm.study.units import Unit
from nptm.study.validation import check_world_size, validate
from nptm.utils.files import atomic_write_json, remove_temps

CONFIG_FILE = "config.json"


def _saved_config(out: Path, flag: str) -> StudyConfig:
    path = out / CONFIG_FILE
    try:
        return StudyConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{flag}: unreadable {path}: {e}") from None


def _resume_config(cfg: StudyConfig, given: set[str], out: Path) -> StudyConfig:
    """The saved study's config; flags may change only how it runs (output, execution, device, workers)."""
    if not (out / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume: nothing to resume in {out} (no {CONFIG_FILE})")
    saved = _saved_config(out, "--resume")
    runtime = {"out", "resume", "quiet", *RUNTIME}
    for sec in STUDY_SECTIONS:
        for name in SECTIONS[sec].__dataclass_fields__:
            if name in given and name not in runtime and getattr(getattr(cfg, sec), name) != getattr(getattr(saved, sec), name):
                raise ConfigError(f"--{name.replace('_', '-')} differs from the study being resumed in {out}")
    how = {**vars(cfg.output), **vars(cfg.execution),
           **{k: getattr(cfg.training if k in vars(cfg.training) else cfg.data, k) for k in RUNTIME}}
    return saved.updated(how)


def prepare(cfg: StudyConfig, given: set[str], world_size: int = 1) -> tuple[StudyConfig, Path]:
    """Resolve and validate the config; choose and check the output folder (nothing is written)."""
    o, e = cfg.output, cfg.execution
    joins = e.shard is not None or e.submit is not None
    if o.resume:
        if not o.out:
            raise ConfigError("--resume needs --out DIR (the study to continue)")
        out = Path(o.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a study folder")
        cfg = _resume_config(cfg, given, out)
    elif joins:
        if not o.out:
            raise ConfigError(f"--{'shard' if e.shard is not None else 'submit'} needs --out DIR (the folder the "
                              f"study's processes share)")
        out = Path(o.out)
    else:
        out = Path(o.out) if o.out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        if not o.out:
            while out.exists():
                out = out.with_name(out.name + "+")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder; give a new or empty folder")
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"--out {out} is not an empty folder; pass --resume to continue it or choose another")
    _check_writable(out)
    cfg = cfg.resolve()
    validate(cfg)
    check_world_size(cfg, world_size)
    _check_model(cfg)
    if joins and not o.resume and (out / CONFIG_FILE).is_file() \
            and _saved_config(out, "--out").resolve().study_dict() != cfg.study_dict():
        raise ConfigError(f"--out {out} holds a different study (its {CONFIG_FILE} differs); use the same flags "
                          f"for every shard, or another folder")
    return cfg, out


def _check_writable(out: Path) -> None:
    """Fail early when ``out`` cannot be created or written (the nearest existing ancestor decides)."""
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write there ({existing} is not a writable folder)")


def _check_model(cfg: StudyConfig) -> None:
    """A model nptm cannot build, or that a filter pruner's tracer refuses, fails before training."""
    from nptm.models import build_model, check_model_name, filter_preset
    from nptm.pruning import PRUNERS, prune_channels

    try:
        check_model_name(cfg.model.model)
    except ValueError as e:
        raise ConfigError(f"--model: {e}") from None
    structured = [p for p in cfg.pruning.pruner if PRUNERS[p].structured]
    if structured:
        p = cfg.pruning
        try:
            model = build_model(cfg.model.model, 10)
            ratios = filter_preset(cfg.model.model, p.filter_config)(model) if p.filter_config else p.sparsity[0]
            prune_channels(model, "l1_filters", ratios, round_to=p.round_to, ignore=p.ignore,
                           example_input=_example_input(cfg))
        except ValueError as e:
            flag = "--filter-config" if p.filter_config and "config" in str(e) else f"--pruner {structured[0]}"
            raise ConfigError(f"{flag}: {e}") from None


def _example_input(cfg: StudyConfig):
    """A batch of one at the evaluation size of an image-folder dataset; None (the tracer's 32x32) otherwise."""
    import torch
    from nptm.data import DATASETS
    from nptm.data.constants import DEFAULT_RESOLUTION

    if not DATASETS[cfg.data.dataset].resolutions:
        return None
    size = cfg.data.val_resolution or DEFAULT_RESOLUTION
    return torch.zeros(1, 3, size, size)


def create(cfg: StudyConfig, out: Path, plan: list[Unit]) -> None:
    """Create ``out`` with config.json and plan.json (a study that exists keeps them); unwritable -> ConfigError."""
    try:
        (out / "units").mkdir(parents=True, exist_ok=True)
        if not (out / CONFIG_FILE).is_file():
            atomic_write_json(out / CONFIG_FILE, cfg.to_dict())
        write_plan(out, plan)
        remove_temps(out)  # left by a kill mid-write
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None

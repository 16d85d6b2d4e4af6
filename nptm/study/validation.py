"""Checks of a study config that need several fields at once (single values are checked on conversion)."""
from __future__ import annotations

from nptm.data import DATASETS, get_dataset
from nptm.pruning.patterns import Blocks, as_pattern
from nptm.pruning.pruners import PRUNERS
from nptm.schedules import schedule_kind
from nptm.study.config import ConfigError, DataOptions, StudyConfig, repr_value
from nptm.study.presets import preset_values
from nptm.study.strategies import STRATEGIES


def validate(cfg: StudyConfig) -> None:
    """Raise ConfigError naming the first flag combination that cannot work."""
    p, t, s = cfg.pruning, cfg.training, cfg.schedule
    for x in p.sparsity:
        if not 0.0 <= x < 1.0:
            raise ConfigError(f"--sparsity {x} is outside [0, 1)")
    budgets = t.retrain_epochs or ()
    for name, v, lo in [("iterations", p.iterations, 1), ("epochs", t.epochs, 1),
                        ("retrain-epochs", min(budgets, default=None), 1), ("calibration-batches", p.calibration_batches, 1),
                        ("batch-size", cfg.data.batch_size, 1), ("workers", cfg.data.workers, 0),
                        ("threads", t.threads, 1), ("train-resolution", cfg.data.train_resolution, 1),
                        ("val-resolution", cfg.data.val_resolution, 1)]:
        if v is not None and v < lo:
            raise ConfigError(f"--{name} must be at least {lo}, got {v}")
    if not 0 < t.dist_timeout <= 1e6:
        raise ConfigError(f"--dist-timeout must be a positive number of seconds, got {t.dist_timeout}")
    if t.lr is not None and not t.lr > 0:
        raise ConfigError(f"--lr must be positive, got {t.lr}")
    if not 0 <= t.momentum < 1 or t.weight_decay < 0:
        raise ConfigError("--momentum must be in [0, 1) and --weight-decay non-negative")
    if not 0 <= t.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {t.label_smoothing}")
    if not 0 <= s.warmup_epochs < (t.epochs if t.epochs is not None else float("inf")):
        raise ConfigError(f"--warmup-epochs must be in [0, --epochs {t.epochs}), got {s.warmup_epochs}")
    _validate_data(cfg.data)
    if t.precision == "fp16" and t.device == "cpu":
        raise ConfigError("--precision fp16 needs a CUDA device (its GradScaler); on the CPU use bf16 or fp32")
    if len(set(t.seeds)) != len(t.seeds) or min(t.seeds) < 0:
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {t.seeds}")
    if s.milestones is not None and not all(0 < m < 1 for m in s.milestones):
        raise ConfigError(f"--milestones must be fractions in (0, 1), got {s.milestones}")
    for name, v in [("pruner", p.pruner), ("sparsity", p.sparsity), ("pattern", p.pattern), ("schedules", s.schedules),
                    ("retrain-epochs", budgets)]:
        if len(set(v)) != len(v):
            raise ConfigError(f"--{name} lists a value twice: {v}")
    longest = max(budgets, default=0)
    for name in s.schedules:
        problem = schedule_kind(name).problem(longest, t.epochs) if t.epochs is not None else None
        if problem:
            raise ConfigError(f"--schedules {name}: {problem} (--retrain-epochs {longest}, --epochs {t.epochs})")
    for pattern in p.pattern:
        try:
            blocks = isinstance(as_pattern(pattern), Blocks)
        except ValueError as e:
            raise ConfigError(f"--pattern: {e}") from None
        if not blocks:
            raise ConfigError(f"--pattern {pattern}: N:M masks are the pruner nm (--pruner nm --nm-pattern {pattern})")
    masking = [n for n in p.pruner if not PRUNERS[n].structured and PRUNERS[n].algorithm != "n_m"]
    if p.pattern != ("1x1",) and not masking and not p.bimp:
        raise ConfigError(f"--pattern applies to pruners that mask weights; {', '.join(p.pruner)} do not")
    if p.round_to < 1:
        raise ConfigError(f"--round-to must be a positive integer, got {p.round_to}")
    if len(p.gmp_window) != 2 or not 0 <= p.gmp_window[0] <= p.gmp_window[1] <= 1:
        raise ConfigError(f"--gmp-window needs START,END with 0 <= START <= END <= 1, got {p.gmp_window}")
    if t.epochs is not None and p.bimp and t.epochs <= p.iterations * longest:
        raise ConfigError(f"--bimp needs --epochs > --iterations x --retrain-epochs ({t.epochs} <= {p.iterations} x {longest})")
    for pruner in map(PRUNERS.__getitem__, p.pruner):
        problem = STRATEGIES[pruner.algorithm].check(cfg, pruner)
        if problem:
            raise ConfigError(problem)
    unstructured = [n for n, x in PRUNERS.items() if not x.structured]
    if p.bimp and not set(p.pruner) & set(unstructured):  # BIMP prunes with each of them, or magnitude
        raise ConfigError(f"--bimp needs an unstructured pruner ({', '.join(unstructured)})")
    _validate_execution(cfg)


def _validate_data(d: DataOptions) -> None:
    if d.preset and d.dataset != preset_values(d.preset)["dataset"]:
        raise ConfigError(f"--preset {d.preset} is an ImageNet recipe (--dataset {preset_values(d.preset)['dataset']}), "
                          f"not for --dataset {d.dataset}")
    dataset = get_dataset(d.dataset)
    images = {"train-resolution": d.train_resolution, "val-resolution": d.val_resolution,
              "progressive-resize": d.progressive_resize}
    for name, v in images.items():
        if v is not None and not dataset.resolutions:
            with_it = ", ".join(n for n, ds in DATASETS.items() if ds.resolutions)
            raise ConfigError(f"--{name} applies to image-folder datasets ({with_it}), not {d.dataset}")
    if d.loader != "auto" and not dataset.loaders:
        with_it = ", ".join(n for n, ds in DATASETS.items() if ds.loaders)
        raise ConfigError(f"--loader applies to datasets read from files ({with_it}), not {d.dataset}")
    r = d.progressive_resize
    if r is not None:
        if d.train_resolution is not None:
            raise ConfigError("--train-resolution and --progressive-resize both set the training resolution; give one")
        if len(r) != 4 or not (1 <= r[0] <= r[1] and r[0] == int(r[0]) and r[1] == int(r[1]) and 0 <= r[2] <= r[3] <= 1):
            raise ConfigError(f"--progressive-resize needs MIN,MAX,START,END with whole 1 <= MIN <= MAX and "
                              f"fractions 0 <= START <= END <= 1, got {','.join(map(repr_value, r))}")


def _validate_execution(cfg: StudyConfig) -> None:
    e = cfg.execution
    if e.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {e.jobs}")
    if e.wait_timeout <= 0:
        raise ConfigError(f"--wait-timeout must be a positive number of seconds, got {e.wait_timeout}")
    if sum(x is not None and x != 1 for x in (e.shard, e.submit, e.jobs)) > 1:
        raise ConfigError("--jobs, --shard and --submit are different ways to run a study: give one")
    if e.array_size is not None and (e.array_size < 1 or e.submit is None):
        raise ConfigError("--array-size needs --submit and a positive size")
    if e.slurm and e.submit != "slurm":
        raise ConfigError("--slurm KEY=VALUE options need --submit slurm")
    for item in e.slurm:
        if "=" not in item:
            raise ConfigError(f"--slurm: expected KEY=VALUE, got {item!r}")


def check_world_size(cfg: StudyConfig, world_size: int) -> None:
    """The global batch must split evenly over the processes."""
    b = cfg.data.batch_size
    if world_size > 1 and b is not None and b % world_size:
        raise ConfigError(f"--batch-size {b} (the global batch) is not divisible by the {world_size} processes; "
                          f"use a multiple of {world_size}")

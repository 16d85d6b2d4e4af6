"""Typed study configuration. The dataclasses below generate the command line and read config files.

Every field of a section is one flag: ``--field-name`` (underscores become dashes), its type from the
annotation, its help/choices from the field metadata (choices read from the registries). ``tuple[...]`` fields
take comma lists. Fields left ``None`` take the dataset's defaults (registered with it, ``nptm.data.DATASETS``) in
``StudyConfig.resolve``. Precedence: dataclass defaults < ``--preset`` (``nptm.study.presets``) < ``--config FILE``
(YAML or JSON, flat or by section) < flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from nptm.data import DATASETS, get_dataset
from nptm.data.loaders import LOADERS
from nptm.pruning.pruners import PRUNERS
from nptm.schedules import SCHEDULES, schedule_kind
from nptm.schedules.original import DECAYS
from nptm.study.deploy import DEPLOY_FORMS
from nptm.study.presets import PRESETS, preset_values
from nptm.study.values import base_type, convert, field_types, repr_value
from nptm.train.optim import OPTIMIZERS
from nptm.train.precision import PRECISIONS
from nptm.utils.errors import ConfigError
from nptm.utils.files import load_config_file

__all__ = ["ConfigError", "StudyConfig", "SECTIONS", "STUDY_SECTIONS", "RUNTIME", "build_parser", "parse_args"]


def opt(default, help: str, **meta):
    return field(default=default, metadata=dict(help=help, **meta))


def parse_seeds(text: str) -> tuple[int, ...]:
    """'3' -> seeds 0, 1, 2; '0,5' or '7,' -> exactly those seeds."""
    text = str(text).strip()
    if "," not in text:
        n = int(text)
        if n < 1:
            raise ValueError("the seed count must be positive")
        return tuple(range(n))
    return tuple(int(s) for s in text.split(",") if s.strip())


@dataclass
class DataOptions:
    preset: str | None = opt(None, "ffcv-imagenet recipe: sets dataset imagenet, model, epochs, batch size, lr "
                                   "(warm-up to epoch 2, linear decay), weight decay, label smoothing, progressive "
                                   "resizing and test-time flip; explicit flags override it", choices=PRESETS)
    dataset: str = opt("digits", "dataset to study", choices=DATASETS)
    data_dir: str | None = opt(None, "folder holding the dataset: CIFAR cifar-10-batches-py/ (cifar-100-python/) or "
                                     "train.beton + test.beton; imagenet and imagefolder train.beton + val.beton or "
                                     "train/<class>/ + val/<class>/ image folders")
    loader: str = opt("auto", "auto (the .beton files when they are there and ffcv imports, CIFAR's decoded once "
                              "into memory; else the fallback), ffcv (streamed through FFCV), or torchvision (image "
                              "folders through PIL; CIFAR: the python files)", choices=LOADERS)
    train_resolution: int | None = opt(None, "image-folder training crop size (default 224)")
    val_resolution: int | None = opt(None, "image-folder evaluation crop size (default 224; the crop is 224/256 of "
                                           "the shorter side)")
    progressive_resize: tuple[float, ...] | None = opt(
        None, "image folders: MIN,MAX,START,END: training resolution MIN until fraction START of each training phase, "
              "then up in steps of 32 px to MAX at fraction END", metavar="MIN,MAX,START,END")
    batch_size: int | None = opt(None, "global training batch size, split evenly over torchrun's processes "
                                       "(default: digits 64, CIFAR 64, ImageNet 256)")
    workers: int = opt(2, "data loading worker processes (loaders that use them)")


@dataclass
class ModelOptions:
    model: str | None = opt(None, "architecture: an nptm model, any torchvision classification model by name, "
                                  "timm/NAME (any timm model, when timm is installed), or "
                                  "package.module:factory (called as factory(num_classes=N)) (default: digits_net, "
                                  "resnet56 on CIFAR, resnet50 on image folders)")
    dense_checkpoint: str | None = opt(None, "start from this trained model (a state dict: torchvision .pth, a "
                                             "{'model': ...} or {'state_dict': ...} wrapper, or an nptm dense "
                                             "checkpoint) instead of training it; --epochs, --lr and --milestones/"
                                             "--decay then describe how it was trained", metavar="FILE")


@dataclass
class PruningOptions:
    pruner: tuple[str, ...] = opt(("magnitude", "random"), "pruners, comma separated (every criterion is one; gmp and "
                                  "sfp prune during training within --epochs)", choices=PRUNERS)
    sparsity: tuple[float, ...] = opt(
        (0.9,), "target sparsity in [0, 1), comma separated (filter pruners: the ratio of every channel group)")
    iterations: int = opt(1, "IMP cycles (prune 1-(1-s)^(1/n) of the remaining weights, retrain, repeat)")
    filter_config: str | None = opt(None, "a filter-pruning preset of the model (PFEC's A, B, ... where it has them) "
                                          "instead of --sparsity, for filter pruners")
    include_linear: bool = opt(False, "prune linear layers too (default: convolutions only, as the 2021 paper's code)")
    spare_classifier: bool = opt(False, "with --include-linear: keep the output layer dense (default: pruned with the "
                                        "other linear layers, as the 2023 paper's code)")
    max_layer_sparsity: float | None = opt(None, "every layer keeps at least 1 - this of its weights (unstructured "
                                                 "pruners; default: a pruning step that would empty a layer stops "
                                                 "the study, naming it; 1: allow empty layers)")
    round_to: int = opt(1, "filter pruners: channels kept per group rounded down to a multiple of this (8: tensor cores)")
    ignore: tuple[str, ...] = opt(("<classifier>",), "filter pruners: layer-name patterns (fnmatch or module prefix) "
                                                     "whose channels are kept; <classifier>: the output layer")
    pattern: tuple[str, ...] = opt(("1x1",), "what unstructured pruners (one-shot, IMP, BIMP, GMP, the sparse-training "
                                   "methods' projection) remove together, comma separated, each run like a --sparsity: "
                                   "1x1 single weights; Kx1 blocks of K consecutive output channels at one input "
                                   "weight (2x1, 4x1, 8x1), scored by the sum of the criterion's scores",
                                   metavar="Kx1[,...]")
    nm_pattern: str = opt("2:4", "--pruner nm: prune N of every M consecutive input weights of each layer (2:4: the "
                                 "format of GPUs' sparse tensor cores, torch.sparse.to_sparse_semi_structured)",
                          metavar="N:M")
    save_models: bool = opt(True, "write each pruned run's final model with nptm.save_pruned (models/<run>.pt)")
    bimp: bool = opt(False, "add BIMP runs (unstructured pruners): linear schedule for T - n*T_rt epochs, then IMP with ALLR")
    calibration_batches: int = opt(16, "training batches that data-aware criteria (taylor, hrank) score with")
    gmp_window: tuple[float, ...] = opt((0.1, 0.75), "GMP: prune from fraction START to END of --epochs, once per "
                                                     "epoch on the cubic ramp", metavar="START,END")


@dataclass
class ScheduleOptions:
    schedules: tuple[str, ...] = opt(tuple(n for n in SCHEDULES if schedule_kind(n).default),
                                     "retraining schedules, comma separated", choices=SCHEDULES)
    decay: str = opt("step", "original schedule after its warm-up: step (x gamma at each milestone) or linear "
                             "(to 0 at the end)", choices=DECAYS)
    warmup_epochs: float = opt(0.0, "linear warm-up of the original schedule from 1e-4 x lr to lr, in epochs")
    milestones: tuple[float, ...] | None = opt(None, "lr drops (x gamma) of the original schedule, as fractions of it")
    gamma: float = opt(0.1, "lr factor at each milestone of the original schedule")
    cycle_momentum: bool = opt(False, "CLR cycles momentum 0.85-0.95 like OneCycleLR")


@dataclass
class TrainingOptions:
    epochs: int | None = opt(None, "original (dense) training epochs T (default: digits 30, CIFAR 160, ImageNet 90)")
    retrain_epochs: tuple[int, ...] | None = opt(
        None, "retraining budgets T_rt in epochs, comma separated: every schedule retrains the same pruned weights "
              "for each (default: digits 10, CIFAR 40, ImageNet 45)")
    lr: float | None = opt(None, "peak learning rate of the original schedule (default 0.1)")
    optimizer: str = opt("nesterov", "nesterov or sgd (SGD with Nesterov or plain momentum), or adamw",
                         choices=OPTIMIZERS)
    momentum: float = opt(0.9, "SGD momentum (AdamW: beta1)")
    weight_decay: float = opt(1e-4, "weight decay")
    precision: str = opt("auto", "auto (bf16 on CUDA, fp32 on the CPU), fp32, bf16 (autocast; on the CPU too, slow "
                                 "without bf16 hardware), fp16 (autocast with a GradScaler, CUDA only)",
                         choices=PRECISIONS)
    label_smoothing: float = opt(0.0, "label smoothing of the training loss (test loss: plain cross-entropy)")
    tta_flip: bool = opt(False, "evaluate on each test image and its mirror image, averaging the logits")
    seeds: tuple[int, ...] = opt((0, 1), "number of seeds, or a comma list of seeds", parse=parse_seeds)
    scratch: bool = opt(False, "add Scratch-E and Scratch-B baselines")
    device: str = opt("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:1, ...")
    threads: int | None = opt(None, "CPU threads for torch (default: 1 on digits, whose tiny batches only lose "
                                    "from more, else torch's choice)")
    dist_timeout: float = opt(300.0, "seconds a process waits for its peers under torchrun before it fails")


@dataclass
class OutputOptions:
    out: str | None = opt(None, "output folder (default: a fresh runs/<timestamp>); must be new or empty")
    resume: bool = opt(False, "continue the interrupted study in --out")
    quiet: bool = opt(False, "no progress bars")
    deploy: str = opt("none", "also write each pruned run's model sparsified for CPU inference (sparse: "
                              "models/<run>.sparse.pt, nptm.load_sparse reads it) or as ONNX (onnx: models/<run>.onnx)",
                      choices=tuple(DEPLOY_FORMS))
    latency_batches: tuple[int, ...] | None = opt(
        None, "measure every run's CPU inference latency (as deployed: nptm.sparsify or shrunk) against the dense "
              "model at these batch sizes; 0: do not (default: digits and CIFAR 1,64, image folders 1,16)")


def _method_options() -> type:
    """A section of every option of every pruning-stable method (``nptm.pruning.sparse_training``): method X's
    option y is ``--X-y``, with the method's default and help."""
    from nptm.pruning.sparse_training import SPARSE_TRAINING

    fields = []
    for name, method in SPARSE_TRAINING.items():
        hints = typing.get_type_hints(method)
        for f in method.options():
            fields.append((f"{name}_{f.name}", hints[f.name],
                           opt(f.default, f"--pruner {name}: {f.metadata.get('help', f.name)}")))
    cls = dataclasses.make_dataclass("MethodOptions", fields)
    cls.__module__ = __name__  # picklable as nptm.study.config.MethodOptions (broadcast to ranks, sent to workers)
    return cls


MethodOptions = _method_options()


@dataclass
class ExecutionOptions:
    jobs: int = opt(1, "run independent units of the study in this many local processes (each with --threads)")
    shard: str | None = opt(None, "run shard I of N into a shared --out (its share of the units first, then any that "
                                  "is ready); auto: the Slurm array task (SLURM_ARRAY_TASK_ID/COUNT) or Kubernetes "
                                  "indexed Job (JOB_COMPLETION_INDEX, NPTM_SHARDS) it runs in", metavar="I/N|auto")
    submit: str | None = opt(None, "submit the study through submitit and return (slurm: as Slurm job arrays, dense "
                                   "models first), or run it the same way on this machine (local)",
                             choices=("slurm", "local"))
    array_size: int | None = opt(None, "--submit: tasks of the array that follows the dense models (default: one per "
                                       "unit, at most 64)")
    slurm: tuple[str, ...] = opt((), "--submit slurm: submitit parameters as KEY=VALUE (e.g. slurm_partition=gpu,"
                                     "timeout_min=600,gpus_per_node=1,cpus_per_task=8)", metavar="KEY=VALUE[,...]")
    wait_timeout: float = opt(86400.0, "seconds a process waits for units that other processes are making (exit 4)")


RUNTIME = ("workers", "device", "threads", "dist_timeout")  # fields that change how a study runs, not its results
SECTIONS = {"data": DataOptions, "model": ModelOptions, "pruning": PruningOptions, "methods": MethodOptions,
            "schedule": ScheduleOptions, "training": TrainingOptions, "output": OutputOptions,
            "execution": ExecutionOptions}
STUDY_SECTIONS = ("data", "model", "pruning", "methods", "schedule", "training")  # those that define the results


@dataclass
class StudyConfig:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    pruning: PruningOptions = field(default_factory=PruningOptions)
    methods: MethodOptions = field(default_factory=MethodOptions)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, name)).items()}
                for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudyConfig":
        return cls().updated(d)

    def updated(self, d: dict[str, Any]) -> "StudyConfig":
        """A copy with values from a flat ({field: v}) or sectioned ({section: {field: v}}) mapping."""
        values = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        owner = {f: s for s, sec in SECTIONS.items() for f in sec.__dataclass_fields__}
        for key, value in d.items():
            if key in SECTIONS and isinstance(value, dict):
                items = [(k, v, key) for k, v in value.items()]
            else:
                items = [(key, value, owner.get(key.replace("-", "_")))]
            for k, v, section in items:
                k = k.replace("-", "_")
                if section is None or k not in SECTIONS[section].__dataclass_fields__:
                    raise ConfigError(f"unknown config key {k!r}")
                values[section][k] = convert(SECTIONS[section], k, v)
        return StudyConfig(**{s: SECTIONS[s](**values[s]) for s in SECTIONS})

    def resolve(self) -> "StudyConfig":
        """Fill dataset defaults into the fields left None."""
        defaults = get_dataset(self.data.dataset).defaults
        fill = {k: v for k, v in defaults.items() if _get(self, k) is None}
        return self.updated(fill) if fill else self

    def study_dict(self) -> dict[str, Any]:
        """The sections that determine the results (what a resumed run must share)."""
        d = self.to_dict()
        return {k: {f: v for f, v in d[k].items() if f not in RUNTIME} for k in STUDY_SECTIONS}

    def to_argv(self) -> list[str]:
        """Flags reproducing this config (round trip: parse_args(cfg.to_argv()) == cfg)."""
        d = self.data
        base = StudyConfig().updated(preset_values(d.preset, self.training.epochs, d.train_resolution)) if d.preset \
            else StudyConfig()  # what the flags below start from
        argv = []
        for sec_name, sec in SECTIONS.items():
            for f in dataclasses.fields(sec):
                v = getattr(getattr(self, sec_name), f.name)
                if v == getattr(getattr(base, sec_name), f.name):
                    continue
                flag = "--" + f.name.replace("_", "-")
                if isinstance(v, bool):
                    argv.append(flag if v else "--no-" + f.name.replace("_", "-"))
                elif v is None:
                    raise ConfigError(f"{flag} cannot be reset to None on the command line")

                else:
                    argv += [flag, ",".join(map(repr_value, v)) + ("," if len(v) == 1 and f.name == "seeds" else "")
                             if isinstance(v, tuple) else repr_value(v)]
        return argv


def _get(cfg: StudyConfig, name: str):
    for s in SECTIONS:
        if name in SECTIONS[s].__dataclass_fields__:
            return getattr(getattr(cfg, s), name)
    raise KeyError(name)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m nptm.train", argument_default=argparse.SUPPRESS,
                description="Prune networks and retrain them under several learning-rate schedules "
                            "(with no arguments: the default study on scikit-learn's digits).",
                epilog="Results never overwrite earlier ones: without --out a fresh runs/<timestamp> folder is "
                       "used, and an explicit --out must be new or empty unless --resume continues the study "
                       "it holds. Multi-GPU / multi-node: launch with torchrun (--batch-size stays the global batch). "
                       "Exit status: 0 done, 1 diverged (NaN/Inf loss), 2 bad input or a failed write, 3 a torchrun "
                       "peer crashed or timed out, 130/143 interrupted (SIGINT/SIGTERM); --resume continues.")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON config file (flags override it)")
    for sec_name, sec in SECTIONS.items():
        group = p.add_argument_group(sec_name)
        for f in dataclasses.fields(sec):
            flag = "--" + f.name.replace("_", "-")
            tp, is_tuple, _ = base_type(field_types(sec)[f.name])
            default = ",".join(map(repr_value, f.default)) if isinstance(f.default, tuple) else f.default
            help_ = f"{f.metadata['help']} (default: {default})" if f.default is not None else f.metadata["help"]
            if tp is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, help=f.metadata["help"])
            else:
                choices = f.metadata.get("choices")
                name = "{" + ",".join(choices) + "}" if choices else f.name.upper()
                metavar = f.metadata.get("metavar") or name + ("[,...]" if is_tuple else "")
                group.add_argument(flag, type=str, metavar=metavar, help=help_)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[StudyConfig, set[str]]:
    """The config from defaults, --preset, --config and flags, and the names of the fields set by flags."""
    ns = vars(build_parser().parse_args(argv))
    file = load_config_file(ns.pop("config")) if "config" in ns else {}
    cfg = StudyConfig().updated(file).updated(ns)
    if cfg.data.preset:  # the preset under the explicit values, shaped by an explicit --epochs
        explicit = set(ns) | {k.replace("-", "_") for key, v in file.items()
                              for k in (v if key in SECTIONS and isinstance(v, dict) else [key])}
        layer = preset_values(cfg.data.preset, cfg.training.epochs if "epochs" in explicit else None,
                              cfg.data.train_resolution if "train_resolution" in explicit else None)
        cfg = StudyConfig().updated(layer).updated(file).updated(ns)
    return cfg, set(ns)

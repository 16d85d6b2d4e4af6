"""What a process running a study's units shares between them: the config, the device, the data of the current
seed, the dense baseline, checkpointed training phases, and reading and writing units' outputs."""
from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from itertools import islice
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nptm.data import DataConfig, build_dataset
from nptm.models import build_model
from nptm.pruning import Masks, load_pruned, save_pruned
from nptm.schedules import OriginalSchedule
from nptm.study.config import StudyConfig
from nptm.study.measure import DenseBaseline, example_input, inference_latency
from nptm.study.presets import WARMUP_START
from nptm.study.records import Record
from nptm.study.store import UnitStore
from nptm.study.training import TrainingPhases, phase_resize, stream_id
from nptm.study.units import Unit
from nptm.train import distributed
from nptm.train.evaluate import evaluate
from nptm.train.loop import Callback, dist_info, set_loader_epoch
from nptm.utils.seeding import mix_seed


@dataclasses.dataclass
class Calibration:
    """Re-iterable: the first ``batches`` batches of ``loader``'s epoch 0 in stream ``stream``, loaded lazily."""

    loader: Any
    stream: int
    batches: int

    def __iter__(self):
        set_loader_epoch(self.loader, 0, self.stream)
        return islice(iter(self.loader), self.batches)


class StudyContext:
    def __init__(self, cfg: StudyConfig, out: Path, device: torch.device, store: UnitStore,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.out, self.device, self.store = cfg, out, device, store
        self.rank, self.world_size = dist_info()
        t, s = cfg.training, cfg.schedule
        self.original = OriginalSchedule(t.lr, t.epochs, milestones=tuple(sorted(s.milestones)), gamma=s.gamma,
                                         warmup_epochs=s.warmup_epochs, warmup_start=WARMUP_START, decay=s.decay)
        self.phases = TrainingPhases(device, t.momentum, t.weight_decay, cfg.output.quiet, callbacks,
                                     context=lambda: {"config": cfg.study_dict()}, label_smoothing=t.label_smoothing,
                                     tta_flip=t.tta_flip, resize=cfg.data.progressive_resize, optimizer=t.optimizer,
                                     precision=t.precision)
        self._data: tuple[int | None, Any] = (None, None)
        self._baseline: DenseBaseline | None = None
        self._dense_state: dict | None = None
        self.config_json = cfg.to_dict()

    # -- data and models ------------------------------------------------------------------------------
    def data(self, seed: int):
        """The dataset with seed ``seed``'s order (the last one is kept); a rank without its data stops them all."""
        if self._data[0] != seed:
            self._data = (None, None)
            self._data = (seed, distributed.all_ok(lambda: self._build_data(seed)))
        return self._data[1]

    def _build_data(self, seed: int):
        c = self.cfg.data
        resize = phase_resize(c.progressive_resize, self.original.epochs) if c.progressive_resize else None
        return build_dataset(DataConfig(name=c.dataset, data_dir=c.data_dir, batch_size=c.batch_size // self.world_size,
                                        workers=c.workers, device=str(self.device), seed=seed, rank=self.rank,
                                        world_size=self.world_size, loader=c.loader,
                                        channels_last=self.device.type == "cuda", train_resolution=c.train_resolution,
                                        val_resolution=c.val_resolution, progressive_resize=resize))

    def dense_checkpoint(self, data) -> dict:
        """The --dense-checkpoint tensors, read and checked against the model once (on every rank)."""
        if self._dense_state is None:
            from nptm.study.dense_checkpoint import load_dense_checkpoint, read_state_dict

            def read():
                path = self.cfg.model.dense_checkpoint
                state = read_state_dict(path)
                load_dense_checkpoint(self.model(data), path, state)
                return state
            self._dense_state = distributed.all_ok(read)
        return self._dense_state

    def baseline(self, data) -> DenseBaseline:
        if self._baseline is None:
            self._baseline = DenseBaseline.of(self.cfg.model.model, data.num_classes, data.in_channels,
                                              data.image_size, self.cfg.pruning.include_linear,
                                              self.cfg.pruning.spare_classifier)
        return self._baseline

    def model(self, data) -> nn.Module:
        """A new instance of the study's architecture (initialised by whatever the global RNG holds)."""
        return build_model(self.cfg.model.model, data.num_classes, data.in_channels)

    def fresh_model(self, seed: int, data, key: str = "init") -> nn.Module:
        torch.manual_seed(mix_seed(seed, stream_id(key)))
        return self.on_device(self.model(data))

    def on_device(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.device.type == "cuda" else model

    def evaluate(self, model: nn.Module, data) -> tuple[dict[str, float], float]:
        start = time.perf_counter()
        ev = evaluate(model, data.test, self.device, self.cfg.training.tta_flip, precision=self.cfg.training.precision)
        return ev, time.perf_counter() - start

    def calibration(self, data, key: str) -> Calibration:
        """The first ``--calibration-batches`` training batches in the order of stream ``key``."""
        return Calibration(data.train, stream_id(f"{key}/calibration"), self.cfg.pruning.calibration_batches)

    # -- training -------------------------------------------------------------------------------------
    def train(self, unit: Unit, phase: str | None, model: nn.Module, masks: Masks | None, schedule, epochs: int, data,
              first: Sequence[Callback] = (), param_groups: list[dict] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """Train phase ``<run>/<phase>`` (just ``<run>`` when ``phase`` is None) of ``unit``, checkpointed in its
        folder."""
        key = unit.run if phase is None else f"{unit.run}/{phase}"
        path = self.store.folder(unit.id) / f"{phase or 'checkpoint'}.pt"
        return self.phases.run(key, path, model, masks, schedule, epochs, data, unit.seed, first=first,
                               param_groups=param_groups)

    # -- outputs --------------------------------------------------------------------------------------
    def save_model(self, unit: Unit, name: str, model: nn.Module, masks: Masks | None, data) -> Path:
        """``model`` (and its masks) as ``<unit folder>/<name>.pt``, in ``nptm.save_pruned``'s format."""
        path = self.store.folder(unit.id) / f"{name}.pt"
        if self.rank == 0:
            save_pruned(model, path, masks.state_dict() if masks is not None else None, info=self.info(data))
        return path

    def load_model(self, unit: Unit, name: str, data) -> tuple[nn.Module, Masks | None]:
        """What ``save_model`` wrote, on every rank (rank 0 reads, the others receive it)."""
        def read():
            path = self.store.folder(unit.id) / f"{name}.pt"
            model = self.model(data)
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if all(tuple(model.state_dict()[k].shape) == tuple(s) for k, s in payload["shapes"].items()
                   if k in model.state_dict()) and payload["shapes"].keys() == model.state_dict().keys():
                state = OrderedDict(payload["state_dict"])
                state._metadata = OrderedDict(payload.get("metadata") or {})  # type: ignore[attr-defined]  # versions
                model.load_state_dict(state)
                masks = payload["masks"]
            else:  # filter-pruned: shrink a fresh instance to the file's shapes
                shape = (data.in_channels, data.image_size, data.image_size)
                model, masks = load_pruned(model, path, example_input=example_input(model, shape), with_masks=True)
            return model, masks
        model, masks = distributed.from_rank0(read)
        model = self.on_device(model)
        return model, (Masks.from_state_dict({k: m.to(self.device) for k, m in masks.items()}) if masks else None)

    def result(self, unit: Unit) -> dict[str, Any]:
        """A finished input unit's result, on every rank (rank 0 reads it: other nodes need not see --out)."""
        return distributed.from_rank0(lambda: self.store.result(unit.id))

    def info(self, data) -> dict[str, Any]:
        """The architecture of the study's model files (``python -m nptm.export`` reads it)."""
        from nptm.study.deploy import model_info

        return model_info(self.cfg.model.model, data.num_classes, self.baseline(data).input_shape)

    def record(self, record: Record, model: nn.Module, masks: Masks | None, data) -> dict[str, Any]:
        """The JSON of a finished run, with the CPU inference latency of its final ``model`` against the dense
        architecture (``--latency-batches``; rank 0 measures, the others receive it), printed as one line. A pruned
        run's model is written to ``models/<run>.pt`` (``--save-models``; and its ``--deploy`` form)."""
        batches = [b for b in self.cfg.output.latency_batches or () if b > 0]
        if batches:
            dense = None if record.kind == "dense" else self.model(data)
            start = time.perf_counter()
            record.latency = distributed.from_rank0(
                lambda: inference_latency(model, masks, self.baseline(data), batches, dense))
            record.latency["time_latency_s"] = time.perf_counter() - start
        rec = record.to_json(self.world_size, self.config_json)
        if record.kind != "dense" and self.cfg.pruning.save_models:
            from nptm.study.deploy import write_deployable

            rec.update(distributed.from_rank0(lambda: write_deployable(
                self.out, record.run, model, masks.state_dict() if masks is not None else None, self.info(data),
                self.cfg.output.deploy)))
        if self.rank == 0 and not self.cfg.output.quiet:
            empty = f"  EMPTY LAYERS: {', '.join(rec['empty_layers'])}" if rec.get("empty_layers") else ""
            print(f"{rec['run']:<40} top-1 {100 * rec['top1']:6.2f}%  sparsity {rec['sparsity']:.4f}{empty}", flush=True)
        return rec

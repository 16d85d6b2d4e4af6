"""The retraining study: dense training, pruning, retraining under each schedule, baselines.

Per seed: train the dense model once under the original schedule; then per pruner and sparsity,
prune (one-shot, or IMP with ``iterations`` cycles) and, for each retraining budget, retrain the same
pruned weights under every schedule (a schedule's IMP chain keeps its own weights). Pruners that prune
during training (GMP, SFP: ``nptm.train.during``) run within the total budget T instead. ``scratch`` adds
Scratch-E (pruned architecture/mask from random init, T + n*T_rt epochs) and Scratch-B (that times
dense/pruned effective FLOPs), both for the mask/architecture of one-shot pruning the dense model;
``bimp`` adds BIMP (linear schedule for T0 = T - n*T_rt epochs, then IMP with ALLR: same budget T).
Every training phase is checkpointed each epoch, so a killed study resumes to identical results.
Under torchrun every rank runs the same study on its share of each global batch; rank 0's pruning
(weights and masks) is broadcast, and only rank 0 writes.
"""
from __future__ import annotations

import copy
import dataclasses
from itertools import islice
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nptm.data import DataConfig, build_dataset
from nptm.models import build_model, reinitialize
from nptm.pruning import PRUNERS, Masks, Pruner, iterative_amounts, prunable_weights
from nptm.schedules import OriginalSchedule, build_schedule
from nptm.train import distributed
from nptm.train.config import ConfigError, StudyConfig
from nptm.train.dense_checkpoint import load_dense_checkpoint, read_state_dict
from nptm.train.during import run_during_training
from nptm.train.evaluate import evaluate
from nptm.train.loop import Callback, dist_info, set_loader_epoch
from nptm.train.phases import (PhaseRunner, Reference, measure, original_schedule, phase_resize, prune,
                               seeded_generator, stream_id, subsample_trace, timed)
from nptm.train.presets import WARMUP_START
from nptm.train.precision import resolve_precision
from nptm.train.results import load_results, write_results
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


def fmt_sparsity(s: float | str) -> str:
    return s if isinstance(s, str) else f"{s:g}"


class Study:
    def __init__(self, cfg: StudyConfig, out: Path, *, device: torch.device, callbacks: Sequence[Callback] = (),
                 on_ready=None):
        """``on_ready()`` runs once the first dataset loaded, before anything is written (creates ``out``)."""
        self.cfg, self.out, self.device = cfg, out, device
        self.rank, self.world_size = dist_info()
        self.results: list[dict[str, Any]] = []
        # a resumed study rewrites results.json only once it has more records than that file
        self._on_disk = distributed.from_rank0(self._records_on_disk) if cfg.output.resume else 0
        self._cache: tuple = (None,)  # the last first-cycle prune: (key, model, masks, info)
        t, s = cfg.training, cfg.schedule
        self.original = OriginalSchedule(t.lr, t.epochs, milestones=tuple(sorted(s.milestones)), gamma=s.gamma,
                                         warmup_epochs=s.warmup_epochs, warmup_start=WARMUP_START, decay=s.decay)
        self.on_ready = on_ready
        try:
            resolve_precision(t.precision, device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.runner = PhaseRunner(out / "checkpoints", device, t.momentum, t.weight_decay, cfg.output.quiet, callbacks,
                                  context=lambda: {"config": cfg.study_dict(), "results": list(self.results)},
                                  label_smoothing=t.label_smoothing, tta_flip=t.tta_flip,
                                  resize=cfg.data.progressive_resize, optimizer=t.optimizer, precision=t.precision)
        self._dense_state = None  # the --dense-checkpoint tensors, read (and checked) once

    def _records_on_disk(self) -> int:
        try:
            return len(load_results(self.out))
        except (OSError, ValueError, TypeError):
            return 0

    # -- orchestration -------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        p = self.cfg.pruning
        for seed in self.cfg.training.seeds:
            data = distributed.all_ok(lambda: self._data(seed))  # a rank without its data stops them all
            if self.cfg.model.dense_checkpoint and self._dense_state is None:  # refused before anything is written
                self._dense_state = distributed.all_ok(lambda: self._read_dense_checkpoint(data))
            if self.on_ready is not None:
                distributed.all_ok(self.on_ready)
                self.on_ready = None
            dense = self.dense(seed, data)
            for pruner in map(PRUNERS.__getitem__, p.pruner):
                for sparsity in self._targets(pruner):
                    if pruner.during_training:
                        run_during_training(self, seed, data, dense, pruner, sparsity)
                        continue
                    for budget in self.cfg.training.retrain_epochs:
                        for schedule in self.cfg.schedule.schedules:
                            self.retrain(seed, data, dense, pruner, sparsity, schedule, budget)
                        if self.cfg.training.scratch:
                            for kind in ("scratch-e", "scratch-b"):
                                self.scratch(seed, data, dense, pruner, sparsity, kind, budget)
                        if p.bimp and not pruner.structured:
                            self.bimp(seed, data, dense, pruner, sparsity, budget)
        return self.results

    def _targets(self, pruner: Pruner) -> list[float | str]:
        p = self.cfg.pruning
        return [p.filter_config] if pruner.structured and p.filter_config else list(p.sparsity)

    def key(self, seed: int, pruner: Pruner, sparsity, name: str, budget: int | None = None) -> str:
        """A run's name and checkpoint key; the budget is part of it when the study has several."""
        several = budget is not None and len(self.cfg.training.retrain_epochs) > 1
        return f"s{seed}/{pruner.name}-{fmt_sparsity(sparsity)}/{name}" + (f"-rt{budget}" if several else "")

    def calibration(self, data, key: str) -> "Calibration":
        """The first ``--calibration-batches`` training batches in the order of stream ``key``."""
        return Calibration(data.train, stream_id(f"{key}/calibration"), self.cfg.pruning.calibration_batches)

    def _amounts(self, pruner: str, sparsity: float | str) -> list[float | str]:
        return [sparsity] if isinstance(sparsity, str) else iterative_amounts(sparsity, self.cfg.pruning.iterations)

    def _data(self, seed: int):
        c = self.cfg.data
        resize = phase_resize(c.progressive_resize, self.original.epochs) if c.progressive_resize else None
        return build_dataset(DataConfig(name=c.dataset, data_dir=c.data_dir, batch_size=c.batch_size // self.world_size,
                                        workers=c.workers, device=str(self.device), seed=seed, rank=self.rank,
                                        world_size=self.world_size, loader=c.loader,
                                        channels_last=self.device.type == "cuda", train_resolution=c.train_resolution,
                                        val_resolution=c.val_resolution, progressive_resize=resize))

    def _fresh_model(self, seed: int, data, key: str = "init") -> nn.Module:
        torch.manual_seed(mix_seed(seed, stream_id(key)))
        model = build_model(self.cfg.model.model, data.num_classes, data.in_channels).to(self.device)
        return model.to(memory_format=torch.channels_last) if self.device.type == "cuda" else model

    def _record(self, base: dict[str, Any]) -> dict[str, Any]:
        rec = {**base, "world_size": self.world_size, "config": self.cfg.to_dict()}
        rec["time_total_s"] = sum(rec.get(k, 0.0) for k in ("time_prune_s", "time_train_s", "time_eval_s"))
        self.results.append(rec)
        if len(self.results) > self._on_disk:
            distributed.all_ok(lambda: write_results(self.out, self.results) if self.rank == 0 else None)
        if self.rank == 0:
            if not self.cfg.output.quiet:
                print(f"{rec['run']:<40} top-1 {100 * rec['top1']:6.2f}%  sparsity {rec['sparsity']:.4f}", flush=True)
        return rec

    # -- phases --------------------------------------------------------------------------------
    def _read_dense_checkpoint(self, data) -> dict:
        path = self.cfg.model.dense_checkpoint
        state = read_state_dict(path)
        load_dense_checkpoint(build_model(self.cfg.model.model, data.num_classes, data.in_channels), path, state)
        return state

    def _loaded_dense(self, seed: int, data) -> tuple[nn.Module, dict[str, Any]]:
        """The --dense-checkpoint model and its test metrics, in place of dense training."""
        model = load_dense_checkpoint(self._fresh_model(seed, data), self.cfg.model.dense_checkpoint, self._dense_state)
        ev, eval_s = timed(evaluate, model, data.test, self.device, self.cfg.training.tta_flip,
                           precision=self.cfg.training.precision)
        return model, {"top1": ev["top1"], "loss": ev["loss"], "history": [], "time_train_s": 0.0,
                       "time_eval_s": eval_s, "dense_checkpoint": str(self.cfg.model.dense_checkpoint)}

    def dense(self, seed: int, data):
        key = f"s{seed}/dense"
        ipe = len(data.train)
        schedule = original_schedule(self.original, ipe)  # how the model was (or is) trained
        if self.cfg.model.dense_checkpoint:
            model, summary = self._loaded_dense(seed, data)
        else:
            model = self._fresh_model(seed, data)
            model, summary = self.runner.run(key, model, None, schedule, self.original.epochs, data, seed)
        self.ref = Reference({n: w.numel() for n, w in prunable_weights(model, self.cfg.pruning.include_linear).items()},
                             0, (data.in_channels, data.image_size, data.image_size))
        stats = measure(model, None, self.ref, self.cfg.pruning.include_linear)
        self.ref.flops = stats["flops_dense"]
        stats["speedup"] = self.ref.flops / max(stats["flops_effective"], 1)
        self._record({"run": key, "kind": "dense", "seed": seed, "pruner": "-", "sparsity_target": 0.0,
                      "schedule": "original", "epochs": self.original.epochs, "iters_per_epoch": ipe, **stats,
                      **summary, "lr_trace": subsample_trace(schedule.lrs())})
        return model, summary

    def _prune_step(self, seed, data, model, masks, pruner, amount, key, before_loss, budget):
        p, t = self.cfg.pruning, self.cfg.training
        loader = self.calibration(data, key) if pruner.needs_data else None
        (pruned, masks, (d, d1, d2)), prune_s = timed(
            prune, model, masks, pruner, amount, arch=self.cfg.model.model, include_linear=p.include_linear,
            generator=seeded_generator(seed, key), retrain_epochs=budget, total_epochs=t.epochs, loader=loader,
            **self._structured_opts())
        d, d1, d2 = self._sync_pruned(pruned, masks, (d, d1, d2))
        if self.device.type == "cuda":  # filter pruning builds new tensors
            pruned = pruned.to(memory_format=torch.channels_last)
        ev, eval_s = timed(evaluate, pruned, data.test, self.device, self.cfg.training.tta_flip,
                           precision=self.cfg.training.precision)
        info = {"pruned_top1": ev["top1"], "pruned_loss": ev["loss"], "loss_increase": ev["loss"] - before_loss,
                "d": d, "d1": d1, "d2": d2, "time_prune_s": prune_s, "time_eval_s": eval_s}
        return pruned, masks, info

    def _structured_opts(self) -> dict[str, Any]:
        p = self.cfg.pruning
        return {"round_to": p.round_to, "ignore": p.ignore, "input_shape": self.ref.input_shape}

    def _save_model(self, key: str, model: nn.Module, masks, pruner: Pruner) -> None:
        """``--save-models``: the run's final model as ``models/<run>.pt`` (``nptm.load_pruned`` reads it)."""
        if self.cfg.pruning.save_models and pruner.structured and self.rank == 0:
            from nptm.pruning import save_pruned

            (self.out / "models").mkdir(parents=True, exist_ok=True)
            save_pruned(model, self.out / "models" / (key.replace("/", "__") + ".pt"),
                        masks.state_dict() if masks is not None else None)

    @staticmethod
    def _sync_pruned(model, masks, info):
        """Rank 0's pruned weights, masks and ALLR factors on every rank (they agree unless a kernel broke a
        tie differently; then rank 0 decides)."""
        distributed.broadcast_module(model)
        distributed.broadcast_masks(masks)
        return distributed.broadcast_object(info)

    def _chain(self, seed, data, start, start_loss, pruner, sparsity, schedule_name, key, cycles_schedule, budget,
               lrs=(), prune_key=None):
        """IMP chain: per amount, prune then retrain under ``cycles_schedule(name, d, ipe)``; returns the record
        fields. ``lrs``: the lr trace before the chain (BIMP's initial training). Pruning randomness comes from
        ``prune_key`` (default: the chain's target), so every schedule and budget starts from the same pruned
        weights; ALLR's d2 = budget / T is set per budget."""
        prune_key = prune_key or key.rsplit("/", 1)[0]
        model, masks, loss, lrs = start, None, start_loss, list(lrs)
        cycles, totals = [], {"time_prune_s": 0.0, "time_train_s": 0.0, "time_eval_s": 0.0}
        summary: dict[str, Any] = {}
        ipe = len(data.train)
        for c, amount in enumerate(self._amounts(pruner, sparsity)):
            cache_key = (f"{prune_key}/prune{c}", id(model))
            if c == 0 and self._cache[0] == cache_key:  # another schedule of the same one-shot/first prune
                model, masks, info = copy.deepcopy(self._cache[1]), self._cache[2], dict(self._cache[3])
            else:
                model, masks, info = self._prune_step(seed, data, model, masks, pruner, amount, cache_key[0], loss,
                                                      budget)
                if c == 0:
                    self._cache = (cache_key, copy.deepcopy(model), masks, dict(info))
            info["d2"] = budget / self.cfg.training.epochs
            info["d"] = min(1.0, max(info["d1"], info["d2"]))
            cycle = {"cycle": c + 1, "amount": amount, **{k: v for k, v in info.items() if not k.startswith("time")}}
            totals["time_prune_s"] += info["time_prune_s"]
            totals["time_eval_s"] += info["time_eval_s"]
            if schedule_name == "none":
                summary = {"top1": info["pruned_top1"], "loss": info["pruned_loss"]}
            else:
                schedule = cycles_schedule(schedule_name, info["d"], ipe)
                model, summary = self.runner.run(f"{key}/c{c + 1}", model, masks, schedule, budget, data, seed)
                lrs += schedule.lrs()
                totals["time_train_s"] += summary["time_train_s"]
                totals["time_eval_s"] += summary["time_eval_s"]
            cycle.update(top1=summary["top1"], loss=summary["loss"])
            cycles.append(cycle)
            loss = summary["loss"]
        first = cycles[0]
        self._save_model(key, model, masks, pruner)
        return {"seed": seed, "pruner": pruner.name, "sparsity_target": sparsity, "iterations": len(cycles),
                "retrain_epochs": budget,
                "iters_per_epoch": ipe, **measure(model, masks, self.ref, self.cfg.pruning.include_linear),
                **{k: v for k, v in summary.items() if not k.startswith("time")}, **totals,
                **{k: first[k] for k in ("pruned_top1", "pruned_loss", "loss_increase", "d", "d1", "d2")},
                "cycles": cycles, "lr_trace": subsample_trace(lrs)}

    def _retrain_schedule(self, name: str, d: float, ipe: int, budget: int):
        return build_schedule(name, self.original, budget, ipe,
                              peak_scale=d if name == "ALLR" else 1.0, cycle_momentum=self.cfg.schedule.cycle_momentum)

    def retrain(self, seed, data, dense, pruner, sparsity, schedule_name, budget):
        dense_model, dense_summary = dense
        key = self.key(seed, pruner, sparsity, schedule_name, budget)
        rec = self._chain(seed, data, dense_model, dense_summary["loss"], pruner, sparsity, schedule_name, key,
                          lambda name, d, ipe: self._retrain_schedule(name, d, ipe, budget), budget,
                          prune_key=self.key(seed, pruner, sparsity, "").rstrip("/"))
        n = self.cfg.pruning.iterations if not isinstance(sparsity, str) else 1
        self._record({"run": key, "kind": "retrain", "schedule": schedule_name,
                      "epochs": 0 if schedule_name == "none" else n * budget,
                      "dense_top1": dense_summary["top1"], **rec})

    def scratch(self, seed, data, dense, pruner, sparsity, kind, budget):
        dense_model, dense_summary = dense
        key = self.key(seed, pruner, sparsity, kind, budget)
        one_shot_key = self.key(seed, pruner, sparsity, "").rstrip("/") + "/prune0"  # as the retrained runs' prune
        loader = self.calibration(data, one_shot_key) if pruner.needs_data else None
        if pruner.structured:  # the one-shot pruned architecture, re-drawn from its own init
            shape_of, masks, _ = prune(dense_model, None, pruner, sparsity, arch=self.cfg.model.model,
                                       include_linear=self.cfg.pruning.include_linear,
                                       generator=seeded_generator(seed, f"{key}/prune"), retrain_epochs=1, total_epochs=1,
                                       loader=loader, **self._structured_opts())
            torch.manual_seed(mix_seed(seed, stream_id(f"{key}/init")))
            model = reinitialize(shape_of)
            self._sync_pruned(model, None, None)
        else:  # the one-shot mask on a fresh init
            _, one_shot, _ = prune(dense_model, None, pruner, sparsity, arch=self.cfg.model.model,
                                   include_linear=self.cfg.pruning.include_linear,
                                   generator=seeded_generator(seed, f"{key}/prune"), retrain_epochs=1, total_epochs=1,
                                   loader=loader, **self._structured_opts())
            model = self._fresh_model(seed, data, f"{key}/init")
            masks = Masks.from_state_dict(one_shot.state_dict())
            self._sync_pruned(model, masks, None)
            masks.apply(model)
        stats = measure(model, masks, self.ref, self.cfg.pruning.include_linear)
        n = 1 if isinstance(sparsity, str) else self.cfg.pruning.iterations
        epochs = self.original.epochs + n * budget
        if kind == "scratch-b":
            epochs = max(1, round(epochs * self.ref.flops / max(stats["flops_effective"], 1)))
        original = dataclasses.replace(self.original, epochs=epochs)
        schedule = original_schedule(original, len(data.train), kind)
        model, summary = self.runner.run(key, model, masks, schedule, epochs, data, seed)
        self._save_model(key, model, masks, pruner)
        stats = measure(model, masks, self.ref, self.cfg.pruning.include_linear)
        self._record({"run": key, "kind": kind, "seed": seed, "pruner": pruner.name, "sparsity_target": sparsity,
                      "schedule": kind, "epochs": epochs, "retrain_epochs": budget, "iters_per_epoch": len(data.train),
                      "dense_top1": dense_summary["top1"], **stats, **summary,
                      "lr_trace": subsample_trace(schedule.lrs())})

    def bimp(self, seed, data, dense, pruner, sparsity, budget):
        dense_model, dense_summary = dense
        t, n = self.cfg.training, self.cfg.pruning.iterations
        key = self.key(seed, pruner, sparsity, "bimp", budget)
        t0 = t.epochs - n * budget
        ipe = len(data.train)
        linear = build_schedule("LLR", self.original, t0, ipe)
        model = self._fresh_model(seed, data)  # the dense model's init: same starting point
        model, pre = self.runner.run(f"{key}/train", model, None, linear, t0, data, seed)
        rec = self._chain(seed, data, model, pre["loss"], pruner, sparsity, "ALLR", key,
                          lambda name, d, ipe: self._retrain_schedule("ALLR", d, ipe, budget), budget, lrs=linear.lrs(),
                          prune_key=key)
        rec["time_train_s"] += pre["time_train_s"]
        rec["time_eval_s"] += pre["time_eval_s"]
        self._record({"run": key, "kind": "bimp", "schedule": "BIMP", "epochs": t.epochs,
                      "dense_top1": dense_summary["top1"], "bimp_initial_epochs": t0, **rec})


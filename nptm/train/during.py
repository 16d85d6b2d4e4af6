"""Pruning during training, within the study's total budget T (the dense training's --epochs), reported
beside BIMP:

- GMP (Zhu & Gupta 2017): T epochs from the dense model's init under the original schedule; global
  magnitude masks grow on the cubic ramp once per epoch over ``--gmp-window`` of training, then the
  final mask trains to the end.
- SFP (He et al. 2018): T - T_rt epochs (the original schedule resampled to them) zeroing the lowest-L2
  filters after every epoch while all keep training, then the zero filters are removed and the smaller
  network retrains T_rt epochs with CLR, as the 2021 study retrains SFP. One run per budget T_rt.
"""
from __future__ import annotations

import dataclasses

import torch

from nptm.pruning import Masks, Pruner, prunable_weights
from nptm.pruning.gradual import GMPRamp, prune_to_sparsity
from nptm.pruning.pruners import soft_prune_channels_
from nptm.train.loop import Callback
from nptm.train.phases import channel_options, channel_ratios, measure, original_schedule, subsample_trace


class GradualMagnitude(Callback):
    """After each optimizer step on the ramp, grow the (in-place) masks to the ramp's sparsity."""

    def __init__(self, ramp: GMPRamp, masks: Masks, include_linear: bool):
        self.ramp, self.masks, self.include_linear = ramp, masks, include_linear

    def on_step_end(self, trainer, step, loss) -> None:
        target = self.ramp.sparsity_at(trainer.iteration)
        if target is not None:
            prune_to_sparsity(trainer.model, self.masks, target, include_linear=self.include_linear,
                              optimizer=trainer.optimizer)


class SoftFilterPruning(Callback):
    """After every epoch, zero the lowest-scoring channels of every channel group (they may grow back)."""

    def __init__(self, pruner: Pruner, ratios, options: dict):
        self.pruner, self.ratios, self.options = pruner, ratios, options

    def on_epoch_end(self, trainer, epoch) -> None:
        soft_prune_channels_(trainer.model, self.pruner.criterion, self.ratios, **self.options)


def run_during_training(study, seed: int, data, dense, pruner: Pruner, target) -> None:
    if pruner.structured:
        for budget in study.cfg.training.retrain_epochs:
            _soft_filters(study, seed, data, dense, pruner, target, budget)
    else:
        _gradual(study, seed, data, dense, pruner, target)


def _record(study, key, kind, schedule_name, seed, pruner, target, dense, model, masks, summary, lrs, ipe, **extra):
    stats = measure(model, masks, study.ref, study.cfg.pruning.include_linear)
    study._record({"run": key, "kind": kind, "seed": seed, "pruner": pruner.name, "sparsity_target": target,
                   "schedule": schedule_name, "epochs": study.original.epochs, "iters_per_epoch": ipe,
                   "dense_top1": dense[1]["top1"], **stats, **summary, **extra, "lr_trace": subsample_trace(lrs)})


def _gradual(study, seed, data, dense, pruner: Pruner, target: float) -> None:
    cfg, ipe = study.cfg, len(data.train)
    key = study.key(seed, pruner, target, "GMP")
    model = study._fresh_model(seed, data)  # the dense model's init
    masks = Masks.ones(prunable_weights(model, cfg.pruning.include_linear))
    schedule = original_schedule(study.original, ipe, "GMP")
    start, end = cfg.pruning.gmp_window
    ramp = GMPRamp.over(target, study.original.epochs * ipe, start, end, iters_per_epoch=ipe)
    model, summary = study.runner.run(key, model, masks, schedule, study.original.epochs, data, seed,
                                      first=[GradualMagnitude(ramp, masks, cfg.pruning.include_linear)])
    _record(study, key, "gmp", "GMP", seed, pruner, target, dense, model, masks, summary, schedule.lrs(), ipe,
            gmp_ramp=dataclasses.asdict(ramp))


def _soft_filters(study, seed, data, dense, pruner: Pruner, target, budget: int) -> None:
    cfg, ipe = study.cfg, len(data.train)
    key = study.key(seed, pruner, target, "SFP", budget)
    t0 = study.original.epochs - budget
    model = study._fresh_model(seed, data)
    ratios, options = channel_ratios(cfg.model.model, target), channel_options(model, **study._structured_opts())
    soft = original_schedule(dataclasses.replace(study.original, epochs=t0), ipe, "SFP")
    model, pre = study.runner.run(f"{key}/train", model, None, soft, t0, data, seed,
                                  first=[SoftFilterPruning(pruner, ratios, options)])
    pruned, _ = pruner.prune(model, ratios, **options)
    if study.device.type == "cuda":  # removal builds new tensors
        pruned = pruned.to(memory_format=torch.channels_last)
    clr = study._retrain_schedule("CLR", 1.0, ipe, budget)
    model, summary = study.runner.run(f"{key}/CLR", pruned, None, clr, budget, data, seed)
    study._save_model(key, model, None, pruner)
    summary = {**summary, "time_train_s": summary["time_train_s"] + pre["time_train_s"],
               "time_eval_s": summary["time_eval_s"] + pre["time_eval_s"]}
    _record(study, key, "sfp", "SFP+CLR", seed, pruner, target, dense, model, None, summary,
            [*soft.lrs(), *clr.lrs()], ipe, retrain_epochs=budget, pruned_top1=pre["top1"], sfp_initial_epochs=t0)

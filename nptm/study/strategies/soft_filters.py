"""SFP (He et al. 2018) within the study's total budget T: T - T_rt epochs (the original schedule resampled to them)
zeroing the lowest-L2 channels of every group after every epoch while all keep training, then the zero channels are
removed and the smaller network retrains T_rt epochs with CLR, as the 2021 study retrains SFP. One run per budget."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.pruning import PRUNERS, Pruner
from nptm.pruning.pruners import soft_prune_channels_
from nptm.schedules import build_schedule
from nptm.study.measure import example_input, measure
from nptm.study.records import Record
from nptm.study.strategies import STRATEGIES, Strategy
from nptm.study.training import original_schedule, subsample_trace
from nptm.study.units import Target, Unit
from nptm.train.loop import Callback

RETRAIN_SCHEDULE = "CLR"


class ZeroChannels(Callback):
    """Trainer callback: after every epoch, zero the lowest-scoring channels of every channel group."""

    def __init__(self, pruner: Pruner, ratios, options: dict):
        self.pruner, self.ratios, self.options = pruner, ratios, options

    def on_epoch_end(self, trainer, epoch) -> None:
        soft_prune_channels_(trainer.model, self.pruner.criterion, self.ratios, **self.options)


@dataclass(frozen=True)
class SoftFilterRun(Unit):
    pruner: str
    target: Target
    budget: int
    kind: ClassVar[str] = "sfp"

    def execute(self, ctx) -> dict[str, Any]:
        data, p, pruner = ctx.data(self.seed), ctx.cfg.pruning, PRUNERS[self.pruner]
        iters_per_epoch, t0 = len(data.train), ctx.original.epochs - self.budget
        model = ctx.fresh_model(self.seed, data)
        options = {"example_input": example_input(model, ctx.baseline(data).input_shape), "round_to": p.round_to,
                   "ignore": tuple(p.ignore)}
        soft = original_schedule(dataclasses.replace(ctx.original, epochs=t0), iters_per_epoch, "SFP")
        model, pre = ctx.train(self, "train", model, None, soft, t0, data,
                               first=[ZeroChannels(pruner, self.target.amount, options)])
        pruned = ctx.on_device(pruner.prune(model, self.target.amount, **options)[0])  # removal builds new tensors
        clr = build_schedule(RETRAIN_SCHEDULE, ctx.original, self.budget, iters_per_epoch,
                             cycle_momentum=ctx.cfg.schedule.cycle_momentum)
        model, summary = ctx.train(self, RETRAIN_SCHEDULE, pruned, None, clr, self.budget, data)
        record = Record(self.run, "sfp", self.seed, self.pruner, self.target.value, f"SFP+{RETRAIN_SCHEDULE}",
                        ctx.original.epochs, iters_per_epoch, measure(model, None, ctx.baseline(data)), summary,
                        retrain_epochs=self.budget, time_train_s=summary["time_train_s"] + pre["time_train_s"],
                        time_eval_s=summary["time_eval_s"] + pre["time_eval_s"],
                        lr_trace=subsample_trace([*soft.lrs(), *clr.lrs()]),
                        details={"pruned_top1": pre["top1"], "sfp_initial_epochs": t0})
        return {"record": ctx.record(record, model, None, data)}


class SoftFilters(Strategy):
    def units(self, plan, seed, pruner, target) -> list[Unit]:
        return [SoftFilterRun(plan.run_name(seed, pruner, target, "SFP", b), seed, plan.digest, pruner.name, target, b)
                for b in plan.budgets]

    def check(self, cfg, pruner) -> str | None:
        longest = max(cfg.training.retrain_epochs or (0,))
        if cfg.training.epochs is not None and cfg.training.epochs <= longest:
            return (f"--pruner {pruner.name} trains --epochs minus --retrain-epochs, then retrains: needs --epochs > "
                    f"{longest}")
        return None


STRATEGIES.register("soft_channels", SoftFilters())

"""BIMP (Zimmer, Spiegel & Pokutta 2023): IMP within the budget T of one ordinary training. From the dense model's
init, T0 = T - n*T_rt epochs under a linear schedule (LLR), then n cycles of pruning and ALLR retraining."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.pruning import PRUNERS
from nptm.schedules import build_schedule
from nptm.study.imp import prune_and_evaluate, retrain_chain
from nptm.study.records import Record
from nptm.study.units import Target, Unit


@dataclass(frozen=True)
class BIMP(Unit):
    pruner: str
    target: Target
    budget: int
    kind: ClassVar[str] = "bimp"

    def execute(self, ctx) -> dict[str, Any]:
        data = ctx.data(self.seed)
        pruner, iters_per_epoch = PRUNERS[self.pruner], len(data.train)
        t0 = ctx.cfg.training.epochs - ctx.cfg.pruning.iterations * self.budget
        linear = build_schedule("LLR", ctx.original, t0, iters_per_epoch)
        model = ctx.fresh_model(self.seed, data)  # the dense model's init: the same starting point
        model, pre = ctx.train(self, "train", model, None, linear, t0, data)
        amount = self.target.amounts(ctx.cfg.pruning.iterations)[0]
        model, masks, info = prune_and_evaluate(ctx, self, data, model, None, pruner, amount, f"{self.run}/prune0",
                                                pre["loss"])
        model, masks, fields = retrain_chain(ctx, self, data, model, masks, info, pruner, "ALLR", self.budget,
                                             self.run, lrs=linear.lrs())
        fields["time_train_s"] += pre["time_train_s"]
        fields["time_eval_s"] += pre["time_eval_s"]
        fields["details"]["bimp_initial_epochs"] = t0
        record = Record(self.run, "bimp", self.seed, self.pruner, self.target.value, "BIMP", ctx.cfg.training.epochs,
                        iters_per_epoch, retrain_epochs=self.budget, pattern=self.target.pattern, **fields)
        return {"record": ctx.record(record, model, masks, data)}

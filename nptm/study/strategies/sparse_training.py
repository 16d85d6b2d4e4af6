"""Pruning-stable methods (``nptm.pruning.sparse_training``: GSM, DPF, DNW, STR, CS, LC) within the study's total
budget T, as the 2023 paper's Table 2 compares them with BIMP: from the dense model's init, T epochs under the
original schedule with the method's reparametrization, hooks and parameter groups, then the projection onto
exactly the target sparsity; the record keeps the sparsity the method reached before it (measured on the weights its
forward pass used), the sparsity after it, the share of the weights' squared norm it removed, and the accuracy
before and after."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.pruning.sparse_training import SPARSE_TRAINING
from nptm.study.measure import measure
from nptm.study.records import Record
from nptm.study.strategies import STRATEGIES, Strategy
from nptm.study.training import original_schedule, subsample_trace
from nptm.study.units import Target, Unit
from nptm.utils.errors import ConfigError


@dataclass(frozen=True)
class SparseTrainingRun(Unit):
    pruner: str
    target: Target
    options: tuple[tuple[str, Any], ...]  # the method's options (its --<method>-<option> flags)
    kind: ClassVar[str] = "sparse"

    def execute(self, ctx) -> dict[str, Any]:
        data, p, t = ctx.data(self.seed), ctx.cfg.pruning, ctx.cfg.training
        iters, epochs = len(data.train), ctx.original.epochs
        method = SPARSE_TRAINING[self.pruner](**dict(self.options))
        model = ctx.fresh_model(self.seed, data)  # the dense model's init
        try:
            method.prepare(model, sparsity=float(self.target.value), total_iters=epochs * iters, iters_per_epoch=iters,
                           include_linear=p.include_linear)
        except ValueError as e:
            raise ConfigError(f"--pruner {self.pruner}: {e}") from None
        schedule = original_schedule(ctx.original, iters, self.pruner.upper())
        model, summary = ctx.train(self, None, model, None, schedule, epochs, data, first=[method],
                                   param_groups=method.param_groups(model, t.weight_decay))
        done = method.finish(model, pattern=self.target.pattern)
        masks = done.masks
        ev, eval_s = ctx.evaluate(model, data)  # the projected model is the result
        summary = {**summary, "top1": ev["top1"], "loss": ev["loss"]}
        record = Record(self.run, "sparse-training", self.seed, self.pruner, self.target.value, self.pruner.upper(),
                        epochs, iters, measure(model, masks, ctx.baseline(data)), summary,
                        time_train_s=summary["time_train_s"], time_eval_s=summary["time_eval_s"] + eval_s,
                        lr_trace=subsample_trace(schedule.lrs()),
                        details={"reached_sparsity": done.reached_sparsity, "final_sparsity": done.sparsity,
                                 "projection_change": done.projection_change,
                                 "top1_before_projection": summary_top1(summary),
                                 "method_options": dict(self.options)}, pattern=self.target.pattern)
        return {"record": ctx.record(record, model, masks, data)}


def summary_top1(summary: dict[str, Any]) -> float | None:
    """The last epoch's test top-1 of the training phase (before the projection)."""
    history = summary.get("history") or []
    return history[-1]["test_top1"] if history else None


class SparseTrainingStrategy(Strategy):
    def units(self, plan, seed, pruner, target) -> list[Unit]:
        methods = plan.cfg.methods
        options = tuple((f.name, getattr(methods, f"{pruner.name}_{f.name}"))
                        for f in SPARSE_TRAINING[pruner.name].options())
        return [SparseTrainingRun(plan.run_name(seed, pruner, target, pruner.name.upper()), seed, plan.digest,
                                  pruner.name, target, options)]


STRATEGIES.register("sparse_training", SparseTrainingStrategy())

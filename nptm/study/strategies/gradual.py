"""GMP (Zhu & Gupta 2017) within the study's total budget T: T epochs from the dense model's init under the original
schedule; global magnitude masks grow on the cubic ramp once per epoch over ``--gmp-window`` of training, then the
final mask trains to the end. Reported beside BIMP."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.pruning import Masks, prunable_weights
from nptm.pruning.gradual import GMPRamp, prune_to_sparsity
from nptm.study.measure import measure
from nptm.study.records import Record
from nptm.study.strategies import STRATEGIES, Strategy
from nptm.study.training import original_schedule, subsample_trace
from nptm.study.units import Target, Unit
from nptm.train.loop import Callback
from nptm.utils.errors import ConfigError


class GrowMasks(Callback):
    """Trainer callback: after each optimizer step on the ramp, grow the (in-place) masks to the ramp's sparsity."""

    def __init__(self, ramp: GMPRamp, masks: Masks, include_linear: bool, pattern: str | None = None):
        self.ramp, self.masks, self.include_linear, self.pattern = ramp, masks, include_linear, pattern

    def on_step_end(self, trainer, step, loss) -> None:
        target = self.ramp.sparsity_at(trainer.iteration)
        if target is not None:
            prune_to_sparsity(trainer.model, self.masks, target, include_linear=self.include_linear,
                              optimizer=trainer.optimizer, pattern=self.pattern)


@dataclass(frozen=True)
class GradualMagnitudeRun(Unit):
    pruner: str
    target: Target
    kind: ClassVar[str] = "gmp"

    def execute(self, ctx) -> dict[str, Any]:
        data, p = ctx.data(self.seed), ctx.cfg.pruning
        iters_per_epoch, epochs = len(data.train), ctx.original.epochs
        model = ctx.fresh_model(self.seed, data)  # the dense model's init
        masks = Masks.ones(prunable_weights(model, p.include_linear))
        schedule = original_schedule(ctx.original, iters_per_epoch, "GMP")
        try:
            ramp = GMPRamp.over(float(self.target.value), epochs * iters_per_epoch, *p.gmp_window,
                                iters_per_epoch=iters_per_epoch)
        except ValueError as e:
            raise ConfigError(f"--gmp-window {p.gmp_window[0]:g},{p.gmp_window[1]:g}: {e}") from None
        model, summary = ctx.train(self, None, model, masks, schedule, epochs, data,
                                   first=[GrowMasks(ramp, masks, p.include_linear, self.target.pattern)])
        record = Record(self.run, "gmp", self.seed, self.pruner, self.target.value, "GMP", epochs, iters_per_epoch,
                        measure(model, masks, ctx.baseline(data)), summary, time_train_s=summary["time_train_s"],
                        time_eval_s=summary["time_eval_s"], lr_trace=subsample_trace(schedule.lrs()),
                        details={"gmp_ramp": dataclasses.asdict(ramp)}, pattern=self.target.pattern)
        return {"record": ctx.record(record, model, masks, data)}


class Gradual(Strategy):
    def check(self, cfg, pruner) -> str | None:
        start, end = cfg.pruning.gmp_window
        if end <= start:
            return f"--gmp-window {start:g},{end:g} is empty: --pruner {pruner.name} would never prune"
        return None

    def units(self, plan, seed, pruner, target) -> list[Unit]:
        return [GradualMagnitudeRun(plan.run_name(seed, pruner, target, "GMP"), seed, plan.digest, pruner.name, target)]


STRATEGIES.register("gradual", Gradual())

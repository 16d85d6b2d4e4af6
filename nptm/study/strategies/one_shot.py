"""One-shot pruning (global or per-layer masks, or removed channels), then retraining: the study's main design.

``Pruning`` prunes the seed's dense model once per pruner and target (the first IMP cycle); every schedule and
budget retrains those same weights in its own ``Retraining`` unit, whose IMP chain (``--iterations``) prunes and
retrains again. With ``--scratch`` and ``--bimp`` the baselines of ``scratch.py`` and ``bimp.py`` join them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.pruning import PRUNERS
from nptm.schedules import schedule_kind
from nptm.study.imp import prune_and_evaluate, retrain_chain
from nptm.study.records import Record
from nptm.study.strategies import STRATEGIES, Strategy
from nptm.study.strategies.bimp import BIMP
from nptm.study.strategies.scratch import Scratch
from nptm.study.units import Target, Unit


@dataclass(frozen=True)
class Pruning(Unit):
    """The first pruning step of the seed's dense model (its randomness: stream ``<run>/prune0``)."""

    pruner: str
    target: Target
    dense: Unit
    kind: ClassVar[str] = "prune"

    def execute(self, ctx) -> dict[str, Any]:
        data = ctx.data(self.seed)
        model, _ = ctx.load_model(self.dense, "model", data)
        dense_loss = ctx.result(self.dense)["record"]["loss"]
        amount = self.target.amounts(ctx.cfg.pruning.iterations)[0]
        pruned, masks, info = prune_and_evaluate(ctx, self, data, model, None, PRUNERS[self.pruner], amount,
                                                 f"{self.run}/prune0", dense_loss)
        ctx.save_model(self, "pruned", pruned, masks, data)
        return {"info": info}


@dataclass(frozen=True)
class Retraining(Unit):
    """The pruned weights of ``pruning`` retrained under one schedule for one budget (and the IMP cycles after)."""

    pruner: str
    target: Target
    schedule: str
    budget: int
    pruning: Pruning
    kind: ClassVar[str] = "retrain"

    def execute(self, ctx) -> dict[str, Any]:
        data = ctx.data(self.seed)
        pruner = PRUNERS[self.pruner]
        model, masks = ctx.load_model(self.pruning, "pruned", data)
        info = ctx.result(self.pruning)["info"]
        model, masks, fields = retrain_chain(ctx, self, data, model, masks, info, pruner, self.schedule, self.budget,
                                             self.pruning.run)
        cycles = len(self.target.amounts(ctx.cfg.pruning.iterations))
        epochs = cycles * self.budget if schedule_kind(self.schedule).retrains else 0
        record = Record(self.run, "retrain", self.seed, self.pruner, self.target.value, self.schedule, epochs,
                        len(data.train), retrain_epochs=self.budget, pattern=self.target.pattern, **fields)
        return {"record": ctx.record(record, model, masks, data)}


class OneShot(Strategy):
    def units(self, plan, seed, pruner, target) -> list[Unit]:
        cfg = plan.cfg
        pruning = Pruning(f"s{seed}/{pruner.name}-{target.label}", seed, plan.digest, pruner.name, target,
                          plan.dense[seed])
        units: list[Unit] = [pruning]
        for budget in plan.budgets:
            units += [Retraining(plan.run_name(seed, pruner, target, s, budget), seed, plan.digest, pruner.name,
                                 target, s, budget, pruning) for s in cfg.schedule.schedules]
            if cfg.training.scratch:
                units += [Scratch(plan.run_name(seed, pruner, target, v, budget), seed, plan.digest, pruner.name,
                                  target, v, budget, plan.dense[seed]) for v in Scratch.VARIANTS]
            if cfg.pruning.bimp and self.supports_bimp(pruner):
                units.append(BIMP(plan.run_name(seed, pruner, target, "bimp", budget), seed, plan.digest,
                                  pruner.name, target, budget))
        return units

    @staticmethod
    def bimp_units(plan, seed, pruner, target) -> list[Unit]:
        """BIMP alone (``--bimp`` when the study lists only pruners that prune during training)."""
        return [BIMP(plan.run_name(seed, pruner, target, "bimp", b), seed, plan.digest, pruner.name, target, b)
                for b in plan.budgets]

    def supports_bimp(self, pruner) -> bool:
        return not pruner.structured

    def check(self, cfg, pruner) -> str | None:
        if cfg.pruning.filter_config and cfg.pruning.iterations > 1 and pruner.structured:
            return "--filter-config presets are one-shot: use --iterations 1 or a float --sparsity"
        return None


class SemiStructured(OneShot):
    """N:M masks (``--nm-pattern``), one-shot: the pattern is the target, whatever --sparsity says."""

    def targets(self, cfg, pruner) -> list[Target]:
        nm = cfg.pruning.nm_pattern
        return [Target(nm, nm, nm, pattern=nm)]

    def supports_bimp(self, pruner) -> bool:
        return False

    def check(self, cfg, pruner) -> str | None:
        from nptm.pruning.semi_structured import parse_pattern

        try:
            parse_pattern(cfg.pruning.nm_pattern)
        except ValueError as e:
            return f"--nm-pattern: {e}"
        return None


for _algorithm in ("global", "layer", "channels"):
    STRATEGIES.register(_algorithm, OneShot())
STRATEGIES.register("n_m", SemiStructured())

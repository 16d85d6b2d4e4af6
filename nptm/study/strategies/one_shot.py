"""One-shot pruning (global or per-layer masks, or removed channels), then retraining: the study's main design.

``Pruning`` prunes the seed's dense model once per pruner and target (the first IMP cycle); every schedule and
budget retrains those same weights in its own ``Retraining`` unit, whose IMP chain (``--iterations``) prunes and
retrains again. With ``--scratch`` and ``--bimp`` the baselines of ``scratch.py`` and ``bimp.py`` join them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.pruning import PRUNERS, Masks, Pruner
from nptm.schedules import allr_factor, build_schedule, schedule_kind
from nptm.study.measure import measure, prune_step
from nptm.study.records import Record
from nptm.study.strategies import STRATEGIES, Strategy
from nptm.study.training import seeded_generator, subsample_trace, timed
from nptm.study.units import Target, Unit
from nptm.train import distributed


def prune_and_evaluate(ctx, unit: Unit, data, model, masks: Masks | None, pruner: Pruner, amount, key: str,
                       before_loss: float):
    """Prune ``model`` by ``amount`` with randomness and calibration data from stream ``key``, evaluate it; returns
    (pruned model, masks, info: pruned_top1, pruned_loss, loss_increase, d1, time_prune_s, time_eval_s)."""
    p = ctx.cfg.pruning
    loader = ctx.calibration(data, key) if pruner.needs_data else None
    (pruned, masks, d1), prune_s = timed(
        prune_step, model, masks, pruner, amount, include_linear=p.include_linear,
        generator=seeded_generator(unit.seed, key), round_to=p.round_to, ignore=p.ignore,
        input_shape=ctx.baseline(data).input_shape, loader=loader, pattern=unit.target.pattern,
        spare_classifier=p.spare_classifier,
        max_layer_sparsity=p.max_layer_sparsity)
    # rank 0's pruned weights and masks everywhere (they agree unless a kernel broke a tie differently)
    distributed.broadcast_module(pruned)
    distributed.broadcast_masks(masks)
    d1 = distributed.broadcast_object(d1)
    pruned = ctx.on_device(pruned)  # filter pruning builds new tensors
    ev, eval_s = ctx.evaluate(pruned, data)
    return pruned, masks, {"pruned_top1": ev["top1"], "pruned_loss": ev["loss"],
                           "loss_increase": ev["loss"] - before_loss, "d1": d1, "time_prune_s": prune_s,
                           "time_eval_s": eval_s}


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


def retrain_chain(ctx, unit: Unit, data, model, masks, info, pruner: Pruner, schedule_name: str, budget: int,
                  prune_key: str, lrs=()) -> tuple[Any, Masks | None, dict[str, Any]]:
    """IMP from an already pruned first cycle (``info``: its pruning's facts): per cycle, retrain under
    ``schedule_name`` for ``budget`` epochs, then prune the next amount (stream ``<prune_key>/prune<c>``).
    Returns the final model, its masks and the record's fields. ``lrs``: the lr trace before the chain."""
    iters_per_epoch, lrs, cycles = len(data.train), list(lrs), []
    kind = schedule_kind(schedule_name)
    totals = {"time_prune_s": 0.0, "time_train_s": 0.0, "time_eval_s": 0.0}
    amounts = unit.target.amounts(ctx.cfg.pruning.iterations)
    for c, amount in enumerate(amounts):
        if c > 0:
            model, masks, info = prune_and_evaluate(ctx, unit, data, model, masks, pruner, amount,
                                                    f"{prune_key}/prune{c}", summary["loss"])
        d, d2 = allr_factor(info["d1"], budget, ctx.cfg.training.epochs)
        info = {**info, "d": d, "d2": d2}
        totals["time_prune_s"] += info["time_prune_s"]
        totals["time_eval_s"] += info["time_eval_s"]
        if kind.retrains:
            schedule = build_schedule(schedule_name, ctx.original, budget, iters_per_epoch, peak_scale=d if kind.uses_d else 1.0,
                                      cycle_momentum=ctx.cfg.schedule.cycle_momentum)
            model, summary = ctx.train(unit, f"c{c + 1}", model, masks, schedule, budget, data)
            lrs += schedule.lrs()
            totals["time_train_s"] += summary["time_train_s"]
            totals["time_eval_s"] += summary["time_eval_s"]
        else:
            summary = {"top1": info["pruned_top1"], "loss": info["pruned_loss"]}
        cycles.append({"cycle": c + 1, "amount": unit.target.label if isinstance(amount, dict) else amount,
                       **{k: v for k, v in info.items() if not k.startswith("time")},
                       "top1": summary["top1"], "loss": summary["loss"]})
    first = cycles[0]
    fields = {"measures": measure(model, masks, ctx.baseline(data)), "summary": summary, **totals,
              "lr_trace": subsample_trace(lrs),
              "details": {**{k: first[k] for k in ("pruned_top1", "pruned_loss", "loss_increase", "d", "d1", "d2")},
                          "cycles": cycles}}
    return model, masks, fields


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
        from nptm.study.strategies.bimp import BIMP
        from nptm.study.strategies.scratch import Scratch

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
        from nptm.study.strategies.bimp import BIMP

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

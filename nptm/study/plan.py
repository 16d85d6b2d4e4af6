"""The plan of a study: its runs as units, in the order a single process runs them.

Per seed: the dense model (trained under the original schedule, or read from --dense-checkpoint); then, per
pruner and target, the units its algorithm's strategy plans (``nptm.study.strategies``): one-shot pruning with
every schedule and budget retraining the same pruned weights, Scratch-E/B and BIMP beside them; pruning during
training (GMP, SFP, GSM, ...) within the total budget T. A PFEC-style preset is resolved to layer ratios here, once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nptm.models import build_model, filter_preset
from nptm.pruning import PRUNERS, Pruner
from nptm.pruning.patterns import UNSTRUCTURED
from nptm.study.config import StudyConfig
from nptm.study.measure import measure
from nptm.study.planner import Planner
from nptm.study.records import Record
from nptm.study.strategies import STRATEGIES
from nptm.study.training import original_schedule, subsample_trace
from nptm.study.units import Target, Unit


@dataclass(frozen=True)
class DenseTraining(Unit):
    kind: ClassVar[str] = "dense"

    def execute(self, ctx) -> dict[str, Any]:
        from nptm.study.dense_checkpoint import load_dense_checkpoint

        data = ctx.data(self.seed)
        iters_per_epoch = len(data.train)
        schedule = original_schedule(ctx.original, iters_per_epoch)  # how the model was (or is) trained
        details = {}
        if ctx.cfg.model.dense_checkpoint:
            model = load_dense_checkpoint(ctx.fresh_model(self.seed, data), ctx.cfg.model.dense_checkpoint,
                                          ctx.dense_checkpoint(data))
            ev, eval_s = ctx.evaluate(model, data)
            summary = {"top1": ev["top1"], "loss": ev["loss"], "history": [], "time_train_s": 0.0, "time_eval_s": eval_s}
            details = {"dense_checkpoint": str(ctx.cfg.model.dense_checkpoint)}
        else:
            model, summary = ctx.train(self, None, ctx.fresh_model(self.seed, data), None, schedule,
                                       ctx.original.epochs, data)
        ctx.save_model(self, "model", model, None, data)
        record = Record(self.run, "dense", self.seed, "-", 0.0, "original", ctx.original.epochs, iters_per_epoch,
                        measure(model, None, ctx.baseline(data)), summary, time_train_s=summary["time_train_s"],
                        time_eval_s=summary["time_eval_s"], lr_trace=subsample_trace(schedule.lrs()), details=details)
        return {"record": ctx.record(record, model, None, data)}


def fmt_target(s: float | str) -> str:
    return s if isinstance(s, str) else f"{s:g}"


def targets(planner: Planner, pruner: Pruner) -> list[Target]:
    """The pruner's targets: its strategy's own, or a filter preset, or each --sparsity (masking pruners: in
    each --pattern, its label suffixed with the pattern unless that is single weights)."""
    own = STRATEGIES[pruner.algorithm].targets(planner.cfg, pruner)
    if own is not None:
        return own
    p = planner.cfg.pruning
    if pruner.structured and p.filter_config:
        ratios = filter_preset(planner.cfg.model.model, p.filter_config)(build_model(planner.cfg.model.model, 10))
        return [Target(p.filter_config, p.filter_config, tuple(sorted(ratios.items())))]
    if pruner.structured:
        return [Target(fmt_target(s), s) for s in p.sparsity]
    return [Target(fmt_target(s) + ("" if pat == UNSTRUCTURED else f"-{pat}"), s, pattern=pat)
            for pat in p.pattern for s in p.sparsity]


BIMP_PRUNER = "magnitude"  # BIMP's pruner when the study lists no unstructured one-shot pruner


def plan_study(cfg: StudyConfig) -> list[Unit]:
    """Every unit of the study, each once, in the order one process runs them."""
    planner = Planner(cfg)
    pruners = [PRUNERS[p] for p in cfg.pruning.pruner]
    own_bimp = cfg.pruning.bimp and not any(STRATEGIES[p.algorithm].supports_bimp(p) for p in pruners)
    units: list[Unit] = []
    for seed in cfg.training.seeds:
        planner.dense[seed] = DenseTraining(f"s{seed}/dense", seed, planner.digest)
        units.append(planner.dense[seed])
        for pruner in pruners:
            strategy = STRATEGIES[pruner.algorithm]
            for target in targets(planner, pruner):
                units += strategy.units(planner, seed, pruner, target)
        if own_bimp:
            bimp = PRUNERS[BIMP_PRUNER]
            for target in targets(planner, bimp):
                units += STRATEGIES[bimp.algorithm].bimp_units(planner, seed, bimp, target)
    return list(dict.fromkeys(units))

"""Pruning a model and retraining it, cycle by cycle (IMP): what one-shot retraining and BIMP share."""
from __future__ import annotations

from typing import Any

from nptm.pruning import Masks, Pruner
from nptm.schedules import allr_factor, build_schedule, schedule_kind
from nptm.study.measure import measure, prune_step
from nptm.study.training import seeded_generator, subsample_trace, timed
from nptm.study.units import Unit
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
        spare_classifier=p.spare_classifier, max_layer_sparsity=p.max_layer_sparsity)
    # rank 0's pruned weights and masks everywhere (they agree unless a kernel broke a tie differently)
    distributed.broadcast_module(pruned)
    distributed.broadcast_masks(masks)
    d1 = distributed.broadcast_object(d1)
    pruned = ctx.on_device(pruned)  # filter pruning builds new tensors
    ev, eval_s = ctx.evaluate(pruned, data)
    return pruned, masks, {"pruned_top1": ev["top1"], "pruned_loss": ev["loss"],
                           "loss_increase": ev["loss"] - before_loss, "d1": d1, "time_prune_s": prune_s,
                           "time_eval_s": eval_s}


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

"""Scratch-E and Scratch-B (Le & Hua 2021): the one-shot pruned mask or architecture trained from a new random
init for T + n*T_rt epochs (Scratch-E), or that times the dense/pruned effective FLOPs (Scratch-B)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nptm.models import reinitialize
from nptm.pruning import PRUNERS, Masks
from nptm.study.measure import measure, prune_step
from nptm.study.records import Record
from nptm.study.training import original_schedule, seeded_generator, stream_id, subsample_trace
from nptm.study.units import Target, Unit
from nptm.train import distributed
from nptm.utils.seeding import mix_seed


@dataclass(frozen=True)
class Scratch(Unit):
    pruner: str
    target: Target
    variant: str  # scratch-e or scratch-b
    budget: int
    dense: Unit
    kind: ClassVar[str] = "scratch"
    VARIANTS: ClassVar[tuple[str, ...]] = ("scratch-e", "scratch-b")

    def _pruned_init(self, ctx, data):
        """The one-shot mask on a fresh init, or the one-shot pruned architecture re-drawn from its own init."""
        pruner, p = PRUNERS[self.pruner], ctx.cfg.pruning
        dense_model, _ = ctx.load_model(self.dense, "model", data)
        one_shot_key = f"s{self.seed}/{self.pruner}-{self.target.label}/prune0"  # as the retrained runs' prune
        loader = ctx.calibration(data, one_shot_key) if pruner.needs_data else None
        shape_of, one_shot, _ = prune_step(dense_model, None, pruner, self.target.amount, include_linear=p.include_linear,
                                           generator=seeded_generator(self.seed, f"{self.run}/prune"),
                                           round_to=p.round_to, ignore=p.ignore,
                                           input_shape=ctx.baseline(data).input_shape, loader=loader,
                                           pattern=self.target.pattern,
                                           spare_classifier=p.spare_classifier,
                                           max_layer_sparsity=p.max_layer_sparsity)
        if pruner.structured:
            torch.manual_seed(mix_seed(self.seed, stream_id(f"{self.run}/init")))
            model, masks = reinitialize(shape_of), None
            distributed.broadcast_module(model)
            return ctx.on_device(model), None
        model = ctx.fresh_model(self.seed, data, f"{self.run}/init")
        masks = Masks.from_state_dict(one_shot.state_dict())
        distributed.broadcast_module(model)
        distributed.broadcast_masks(masks)
        masks.apply(model)
        return model, masks

    def execute(self, ctx) -> dict[str, Any]:
        data = ctx.data(self.seed)
        model, masks = self._pruned_init(ctx, data)
        base = ctx.baseline(data)
        epochs = ctx.original.epochs + len(self.target.amounts(ctx.cfg.pruning.iterations)) * self.budget
        if self.variant == "scratch-b":
            epochs = max(1, round(epochs * base.flops / max(measure(model, masks, base)["flops_effective"], 1)))
        schedule = original_schedule(dataclasses.replace(ctx.original, epochs=epochs), len(data.train), self.variant)
        model, summary = ctx.train(self, None, model, masks, schedule, epochs, data)
        record = Record(self.run, self.variant, self.seed, self.pruner, self.target.value, self.variant, epochs,
                        len(data.train), measure(model, masks, base), summary, retrain_epochs=self.budget,
                        time_train_s=summary["time_train_s"], time_eval_s=summary["time_eval_s"],
                        lr_trace=subsample_trace(schedule.lrs()), pattern=self.target.pattern)
        return {"record": ctx.record(record, model, masks, data)}

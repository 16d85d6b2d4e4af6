"""The study's building blocks: measure a model, prune it, run one checkpointed training phase."""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nptm.data.transforms import ProgressiveResize
from nptm.models import count_flops, count_params
from nptm.pruning import Masks, Pruner, prunable_weights
from nptm.schedules import OriginalSchedule, allr_scale
from nptm.schedules.retrain import Schedule
from nptm.train import distributed
from nptm.train.callbacks import Checkpoint, Evaluate, Progress
from nptm.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, set_rng_state
from nptm.train.loop import Callback, Trainer
from nptm.utils.seeding import mix_seed


def stream_id(key: str) -> int:
    """A stable integer for a phase name (seeds its data order and randomness)."""
    return zlib.crc32(key.encode())


def seeded_generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(seed, stream_id(key)))


def original_schedule(original: OriginalSchedule, iters_per_epoch: int, name: str = "original") -> Schedule:
    """The original epoch-wise schedule stepped per iteration."""
    return Schedule(name, original.epochs * iters_per_epoch, lambda it: original.lr_at(it / iters_per_epoch))


def phase_resize(resize: Sequence[float], epochs: int) -> ProgressiveResize:
    """``--progressive-resize MIN,MAX,START,END`` (START, END: fractions) for a phase of ``epochs`` epochs."""
    lo, hi, start, end = resize
    return ProgressiveResize(int(lo), int(hi), start * epochs, end * epochs)


def subsample_trace(lrs: Sequence[float], points: int = 256) -> dict[str, list]:
    """Iteration indices and lrs, at most ``points`` of them, always keeping the first and the last."""
    n = len(lrs)
    idx = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)}) if n > points else list(range(n))
    return {"iteration": idx, "lr": [lrs[i] for i in idx]}


@dataclass
class Reference:
    """What pruned models are measured against: the dense model's prunable sizes and FLOPs."""

    prunable_numel: dict[str, int]
    flops: int
    input_shape: tuple[int, int, int]


def measure(model: nn.Module, masks: Masks | None, ref: Reference, include_linear: bool) -> dict[str, Any]:
    """Sparsity (global and per layer, relative to the dense model), params and FLOPs of ``model``."""
    total, nonzero = count_params(model)
    flops = count_flops(model, ref.input_shape)
    effective = count_flops(model, ref.input_shape, effective=True)
    if masks is not None:
        sparsity, per_layer = masks.sparsity(), masks.per_layer_sparsity()
    else:  # dense or physically smaller (filter-pruned): count what is left against the dense sizes
        weights = prunable_weights(model, include_linear)
        left = {n: int(w.count_nonzero()) if n in weights else 0 for n, w in ((n, weights.get(n)) for n in ref.prunable_numel)}
        per_layer = {n: 1.0 - left[n] / numel for n, numel in ref.prunable_numel.items()}
        sparsity = 1.0 - sum(left.values()) / sum(ref.prunable_numel.values())
    return {"sparsity": sparsity, "per_layer_sparsity": per_layer, "params_total": total, "params_nonzero": nonzero,
            "flops_dense": flops, "flops_effective": effective, "speedup": ref.flops / max(effective, 1)}


@torch.no_grad()
def prune(model: nn.Module, masks: Masks | None, pruner: Pruner, amount: float | str, *, arch: str,
          include_linear: bool, generator: torch.Generator, retrain_epochs: float, total_epochs: float,
          round_to: int = 1, ignore: Sequence[str] = ("<classifier>",), input_shape: Sequence[int] | None = None,
          loader=None):
    """(pruned copy of ``model``, its masks or None, ALLR's d/d1/d2 for this step). ``amount``: the
    fraction of the remaining weights (filter pruners: the ratio of every channel group, or a PFEC preset
    of ``arch``; ``round_to``, ``ignore`` and the traced ``input_shape`` apply to them).
    ``loader``: calibration batches for data-aware criteria."""
    if pruner.structured:
        before = {n: w.detach().double() for n, w in prunable_weights(model, include_linear).items()}
        pruned, _ = pruner.prune(model, channel_ratios(arch, amount), generator=generator, loader=loader,
                                 **channel_options(model, round_to, ignore, input_shape))
        after = {n: w.detach().double() for n, w in prunable_weights(pruned, include_linear).items()}
        # Kept weights are unchanged, so ||theta - theta_p||^2 = ||theta||^2 - ||theta_p||^2 (SPEC's d1).
        norm_sq = sum(float(w.square().sum()) for w in before.values())
        kept_sq = sum(float(w.square().sum()) for w in after.values())
        s = 1.0 - sum(w.numel() for w in after.values()) / sum(w.numel() for w in before.values())
        d1 = math.sqrt(max(norm_sq - kept_sq, 0.0)) / math.sqrt(norm_sq * s) if norm_sq > 0 and s > 0 else 0.0
        d2 = retrain_epochs / total_epochs
        return pruned, None, (min(1.0, max(d1, d2)), d1, d2)
    before = [w.detach().clone() for w in prunable_weights(model, include_linear).values()]
    pruned, new_masks = pruner.prune(model, amount, masks=masks, include_linear=include_linear, generator=generator,
                                     loader=loader)
    after = list(prunable_weights(pruned, include_linear).values())
    return pruned, new_masks, allr_scale(before, after, amount, retrain_epochs, total_epochs)


def channel_ratios(arch: str, amount: float | str):
    """A float ratio for every channel group, or the model's PFEC preset named ``amount``."""
    from nptm.models import filter_preset

    return filter_preset(arch, amount) if isinstance(amount, str) else amount


def channel_options(model: nn.Module, round_to: int, ignore: Sequence[str], input_shape: Sequence[int] | None) -> dict:
    """Structured pruners' keyword arguments: ``round_to``, ``ignore`` and an example input traced on."""
    p = next(model.parameters())
    example = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype) if input_shape else None
    return {"example_input": example, "round_to": round_to, "ignore": tuple(ignore)}


@dataclass
class PhaseRunner:
    """Runs named training phases, each checkpointed every epoch to ``ckpt_dir/<name>.pt``.

    A phase whose checkpoint says done is loaded instead of trained; an unfinished one continues
    from its last epoch. ``context()`` adds study-level state (config, results so far) to checkpoints.
    ``resize`` (MIN,MAX,START,END) stretches the loader's progressive resizing over each phase.
    Rank 0 reads checkpoints and broadcasts them (no shared filesystem needed), and alone writes them.
    """

    ckpt_dir: Path
    device: torch.device
    momentum: float
    weight_decay: float
    quiet: bool
    callbacks: Sequence[Callback] = ()
    context: Any = dict
    label_smoothing: float = 0.0
    tta_flip: bool = False
    resize: Sequence[float] | None = None
    optimizer: str = "nesterov"
    precision: str = "auto"

    def path(self, key: str) -> Path:
        return self.ckpt_dir / (key.replace("/", "__") + ".pt")

    def run(self, key: str, model: nn.Module, masks: Masks | None, schedule: Schedule, epochs: int, data,
            seed: int, first: Sequence[Callback] = ()) -> tuple[nn.Module, dict[str, Any]]:
        """``first``: callbacks that run before evaluation and checkpointing (pruning during training); masks
        they change in place are saved with the phase and restored on resume."""
        path = self.path(key)
        masks_state = masks.state_dict() if masks is not None else None
        evaluator = Evaluate(data.test, tta_flip=self.tta_flip)
        if self.resize is not None:
            data.train.resize = phase_resize(self.resize, epochs)
        trainer = Trainer(model, data.train, schedule, epochs=epochs, masks=masks, momentum=self.momentum,
                          weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
                          optimizer=self.optimizer, precision=self.precision,
                          device=self.device, seed=seed, stream=stream_id(key),
                          name=key, callbacks=[*first, evaluator, Checkpoint(path, lambda: self._context(key, masks_state)),
                                               Progress(not self.quiet), *self.callbacks])
        state = distributed.from_rank0(lambda: self._load(path, key, masks_state))
        if state is not None:
            if state["done"]:
                model.load_state_dict(state["model"])
                _restore_masks(masks, state.get("final_masks"))
                return model, state["summary"]
            trainer.load_state_dict(state["trainer"])
            _restore_masks(masks, state["trainer"]["masks"])
            set_rng_state(state["rng"])
        trainer.fit()
        last = trainer.history[-1]
        summary = {"top1": last["test_top1"], "loss": last["test_loss"], "train_top1": last["train_top1"],
                   "train_loss": last["train_loss"], "history": trainer.history, "iterations": trainer.iteration,
                   "images_per_s": trainer.images / max(trainer.train_time, 1e-9), "time_train_s": trainer.train_time,
                   "time_eval_s": evaluator.time}
        if trainer.is_main:
            save_checkpoint(path, {"done": True, "model": model.state_dict(), "summary": summary,
                                   "final_masks": masks.state_dict() if masks is not None else None,
                                   **self._context(key, masks_state)})
        return model, summary

    def _load(self, path: Path, key: str, masks_state) -> dict[str, Any] | None:
        if not path.exists():
            return None
        state = load_checkpoint(path)
        self._check(path, state, key, masks_state)
        return state

    def _context(self, key: str, masks_state) -> dict[str, Any]:
        return {"key": key, "masks": masks_state, **self.context()}

    @staticmethod
    def _check(path: Path, state: dict, key: str, masks_state) -> None:
        if state.get("key") != key:
            raise CheckpointError(f"{path} belongs to phase {state.get('key')!r}, not {key!r}")
        saved = state.get("masks")
        same = (saved is None) == (masks_state is None) and (
            saved is None or (saved.keys() == masks_state.keys() and all(torch.equal(saved[n], masks_state[n].cpu()) for n in saved)))
        if not same:
            raise CheckpointError(f"{path}: its masks differ from the recomputed pruning (a different study?)")


def _restore_masks(masks: Masks | None, saved: dict | None) -> None:
    if masks is not None and saved is not None:
        for n, m in saved.items():
            masks[n].copy_(m)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


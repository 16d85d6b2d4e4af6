"""Training phases of a study's runs: each named, seeded by its name, checkpointed every epoch so that a killed run
resumes to identical results."""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nptm.data.transforms import ProgressiveResize
from nptm.pruning import Masks
from nptm.schedules import OriginalSchedule
from nptm.schedules.retrain import Schedule
from nptm.train import distributed
from nptm.train.callbacks import Checkpoint, Evaluate, Progress
from nptm.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from nptm.train.loop import Callback, Trainer
from nptm.utils.errors import CheckpointError
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
class TrainingPhases:
    """Runs named training phases, each checkpointed every epoch to the path it is given.

    A phase whose checkpoint says done is loaded instead of trained; an unfinished one continues
    from its last epoch. ``context()`` adds study-level state (the config) to checkpoints.
    ``resize`` (MIN,MAX,START,END) stretches the loader's progressive resizing over each phase.
    Rank 0 reads checkpoints and broadcasts them (no shared filesystem needed), and alone writes them.
    """

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

    def run(self, key: str, path: Path, model: nn.Module, masks: Masks | None, schedule: Schedule, epochs: int, data,
            seed: int, first: Sequence[Callback] = (), param_groups: list[dict] | None = None
            ) -> tuple[nn.Module, dict[str, Any]]:
        """Train phase ``key`` (its name, the seed of its randomness) with its checkpoint at ``path``. ``first``:
        callbacks that run before evaluation and checkpointing (pruning during training); masks they change in
        place are saved with the phase and restored on resume."""
        masks_state = masks.state_dict() if masks is not None else None
        evaluator = Evaluate(data.test, tta_flip=self.tta_flip)
        if self.resize is not None:
            data.train.resize = phase_resize(self.resize, epochs)
        trainer = Trainer(model, data.train, schedule, epochs=epochs, masks=masks, momentum=self.momentum,
                          weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
                          optimizer=self.optimizer, precision=self.precision, param_groups=param_groups,
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


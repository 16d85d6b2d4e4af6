"""Trainer callbacks: evaluation, checkpointing, progress bars."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from nptm.train.checkpoint import rng_state, save_checkpoint
from nptm.train.evaluate import evaluate
from nptm.train.loop import Callback, Trainer
from nptm.utils.progress import progress


class Evaluate(Callback):
    """Test top-1/loss every ``every`` epochs and after the last one, appended to ``trainer.history``."""

    def __init__(self, loader, every: int = 1, tta_flip: bool = False):
        self.loader, self.every, self.tta_flip = loader, every, tta_flip
        self.time = 0.0

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        if (epoch + 1) % self.every and epoch + 1 != trainer.epochs:
            return
        start = time.perf_counter()
        metrics = evaluate(trainer.model, self.loader, trainer.device, self.tta_flip, precision=trainer.precision)
        self.time += time.perf_counter() - start
        lr = trainer.schedule.lr(max(trainer.iteration - 1, 0))
        trainer.history.append({"epoch": epoch + 1, "test_top1": metrics["top1"], "test_loss": metrics["loss"],
                                **{k: v for k, v in trainer.metrics.items() if k != "steps"}, "lr": lr})


class Checkpoint(Callback):
    """After every epoch, atomically write the trainer state, RNG states and ``context()`` to ``path``."""

    def __init__(self, path, context: Callable[[], dict[str, Any]] = dict):
        self.path, self.context = path, context

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        if trainer.is_main:
            save_checkpoint(self.path, {"done": False, "trainer": trainer.state_dict(), "rng": rng_state(),
                                        **self.context()})


class Progress(Callback):
    """A tqdm bar per fit over all its iterations, with the loss and lr (one plain line per epoch when stderr is
    not a terminal: ``nptm.utils.progress``); ``enabled=False`` hides it."""

    def __init__(self, enabled: bool = True, refresh_every: int = 10):
        self.enabled, self.refresh_every = enabled, refresh_every
        self.bar = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.every = self.refresh_every if trainer.device.type == "cpu" else max(self.refresh_every, 100)  # .item() syncs
        if self.enabled and trainer.is_main:
            total = trainer.epochs * trainer.iters_per_epoch
            self.bar = progress(total=total, initial=trainer.epoch * trainer.iters_per_epoch, desc=trainer.name,
                            unit="it", leave=False, dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, trainer: Trainer, step: int, loss) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if step % self.every == 0:
            self.bar.set_postfix(epoch=trainer.epoch + 1, loss=f"{loss.item():.3f}",
                                 lr=f"{trainer.schedule.lr(trainer.iteration - 1):.3g}", refresh=False)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:  # a refresh: one line per epoch in a log
        if self.bar is not None:
            last = trainer.history[-1] if trainer.history and trainer.history[-1]["epoch"] == epoch + 1 else {}
            self.bar.set_postfix(epoch=epoch + 1, **({"test_top1": f"{last['test_top1']:.4f}"} if last else {}))

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

"""The training loop: it only trains. Evaluation, checkpoints, logging and progress are callbacks.

An optimizer from ``nptm.train.optim`` (SGD with Nesterov or plain momentum, AdamW) with the learning
rate set per iteration from a schedule, masks re-applied after every optimizer step (weights,
gradients and optimizer states in one fused call), autocast per ``nptm.train.precision`` (fp16 with
a GradScaler). Each epoch reseeds torch from (seed, stream, epoch) and asks the loader for
that epoch's order, so a run resumed from an epoch checkpoint repeats the uninterrupted one exactly.

Distributed (an initialized process group): the model trains inside DistributedDataParallel, each
rank on its share of every global batch. Each rank's loss is weighted by its share of the global
batch, so DDP's gradient average is the gradient of the global batch's mean loss (the last batch of an
epoch may split unevenly); masks are re-applied on every rank, BatchNorm statistics re-broadcast from
rank 0 after every epoch, metrics summed over ranks, and the NaN check agrees on the first bad step.
Callbacks that write check ``trainer.is_main``.
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nptm.schedules import set_lr
from nptm.train import distributed
from nptm.train.optim import build_optimizer
from nptm.train.precision import autocast, grad_scaler, resolve_precision
from nptm.utils.seeding import mix_seed


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


dist_info = distributed.world  # (rank, world size)


def all_reduce_sum(t: Tensor) -> Tensor:
    return distributed.all_reduce(t)


def set_loader_epoch(loader, epoch: int, stream: int) -> None:
    """``loader.set_epoch(epoch, stream=...)`` when the loader separates streams, else ``set_epoch(epoch)``."""
    if "stream" in inspect.signature(loader.set_epoch).parameters:
        loader.set_epoch(epoch, stream=stream)
    else:
        loader.set_epoch(epoch)


class Callback:
    """Hooks of ``Trainer.fit``; override what you need."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_step_end(self, trainer: "Trainer", step: int, loss: Tensor) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_fit_end(self, trainer: "Trainer") -> None: ...


class Trainer:
    """Trains ``model`` for ``epochs`` epochs of ``loader`` under ``schedule`` (an object with lr(it)).
    ``param_groups``: the optimizer's parameter groups when not all of ``model.parameters()`` alike."""

    def __init__(self, model: nn.Module, loader, schedule, *, epochs: int, masks=None, momentum: float = 0.9,
                 weight_decay: float = 1e-4, device: torch.device | str = "cpu", seed: int = 0, stream: int = 0,
                 name: str = "train", callbacks: Sequence[Callback] = (), nan_check_every: int | None = None,
                 label_smoothing: float = 0.0, optimizer: str = "nesterov", precision: str = "auto",
                 param_groups: list[dict] | None = None):
        self.device = torch.device(device)
        self.model, self.loader, self.schedule, self.masks = model, loader, schedule, masks
        self.epochs, self.seed, self.stream, self.name = epochs, seed, stream, name
        self.label_smoothing = label_smoothing
        self.callbacks = list(callbacks)
        self.rank, self.world_size = dist_info()
        self.is_main = self.rank == 0
        self.optimizer = build_optimizer(optimizer, param_groups or model.parameters(), lr=schedule.lr(0),
                                         momentum=momentum, weight_decay=weight_decay)
        self.precision = resolve_precision(precision, self.device)
        self.scaler = grad_scaler(self.device, self.precision)
        # on the GPU (or across ranks) every check syncs; the first bad step is tracked exactly either way
        self.nan_check_every = nan_check_every or (1 if self.device.type == "cpu" and self.world_size == 1 else 50)
        self.epoch = 0  # epochs completed
        self.iteration = 0  # optimizer steps taken
        self.images = 0  # training images seen (all ranks)
        self.train_time = 0.0  # seconds spent in training epochs, across resumes
        self.metrics: dict[str, float] = {}  # last epoch's train loss/top1
        self.history: list[dict[str, Any]] = []  # filled by callbacks (evaluation, ...)
        self.stop = False  # a callback may set it to end fit after the current epoch

    @property
    def iters_per_epoch(self) -> int:
        return len(self.loader)

    def fit(self) -> "Trainer":
        self._forward = distributed.wrap(self.model, self.device)
        try:
            self._call("on_fit_start")
            while self.epoch < self.epochs and not self.stop:
                self._train_epoch(self.epoch)
                distributed.broadcast_buffers(self.model)
                self.epoch += 1
                self._call("on_epoch_end", self.epoch - 1)
            self._call("on_fit_end")
        finally:
            del self._forward  # drop DDP's hooks and buckets with the wrapper
        return self

    def _loss_weight(self, step: int, n: int) -> float | Tensor:
        """Factor on this rank's mean loss that makes DDP's gradient average the global batch's mean."""
        total = getattr(self.loader, "global_batch", None)
        if total is not None:
            return n * self.world_size / total(step)
        return n * self.world_size / all_reduce_sum(torch.tensor(float(n), device=self.device))  # stays on device

    def _train_epoch(self, epoch: int) -> None:
        model, opt, dev = self.model, self.optimizer, self.device
        torch.manual_seed(mix_seed(self.seed, self.stream, epoch))
        set_loader_epoch(self.loader, epoch, self.stream)
        self._call("on_epoch_start", epoch)
        model.train()
        sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss, correct
        count = 0
        first_bad = torch.full((), -1, dtype=torch.long, device=dev)
        start = time.perf_counter()
        steps = 0
        for step, (x, y) in enumerate(self.loader):
            set_lr(opt, self.schedule, self.iteration)
            with autocast(dev, self.precision):
                out = self._forward(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=self.label_smoothing)
            opt.zero_grad(set_to_none=True)
            weighted = loss if self.world_size == 1 else loss * self._loss_weight(step, len(y))
            if self.scaler is None:
                weighted.backward()
                opt.step()
            else:
                self.scaler.scale(weighted).backward()
                self.scaler.step(opt)
                self.scaler.update()
            if self.masks is not None:
                self.masks.apply(model, opt)
            self.iteration += 1
            steps = step + 1
            with torch.no_grad():
                bad = ~torch.isfinite(loss)
                first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
                sums += torch.stack([loss.detach().double() * len(y), (out.argmax(1) == y).sum().double()])
            count += len(y)
            if steps % self.nan_check_every == 0:
                self._check_finite(first_bad, epoch)
            self._call("on_step_end", step, loss)
        self._check_finite(first_bad, epoch)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.train_time += time.perf_counter() - start
        loss_sum, correct, count = all_reduce_sum(torch.cat([sums, sums.new_tensor([count])])).tolist()
        self.images += int(count)
        self.metrics = {"train_loss": loss_sum / max(count, 1), "train_top1": correct / max(count, 1),
                        "steps": steps}

    def _check_finite(self, first_bad: Tensor, epoch: int) -> None:
        if self.world_size > 1:  # the earliest bad step of any rank (-1 -> "none" sorts last)
            never = torch.iinfo(torch.long).max
            step = int(distributed.all_reduce(torch.where(first_bad < 0, never, first_bad), "min"))
            step = -1 if step == never else step
        else:
            step = int(first_bad)
        if step >= 0:
            raise TrainingDiverged(f"{self.name}: the loss became NaN/Inf at epoch {epoch + 1}/{self.epochs}, "
                                   f"step {step + 1}/{self.iters_per_epoch} (lr {self.schedule.lr(self.iteration - 1):.4g})")

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "masks": self.masks.state_dict() if self.masks is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": self.epoch, "iteration": self.iteration, "images": self.images,
                "train_time": self.train_time, "metrics": dict(self.metrics), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # masks: the caller rebuilds and checks them
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for k in ("epoch", "iteration", "images", "train_time", "metrics", "history"):
            setattr(self, k, state[k])

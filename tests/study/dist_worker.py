"""Test-only entry point: ``torchrun ... tests/study/dist_worker.py [hooks] -- <python -m nptm.train flags>``.

Runs ``nptm.train``'s ``main`` exactly as ``python -m nptm.train`` does, with callbacks the tests need:
``--dump DIR`` saves every rank's weights and masks after each phase (DIR/rank<r>/<phase>.pt);
``--fail-rank R --fail-after N --fail-how exit|hang`` makes rank R crash (os._exit(17)) or stall after
N epochs. It ends as ``python -m nptm.train`` does (``exits.end``: no interpreter teardown, during which gloo's
worker threads can abort the process when they release a finished collective's tensors). It also registers ``digits_nobn``, a digits CNN without BatchNorm: with per-rank BatchNorm
statistics no multi-process run can match one process, so exact-equivalence tests use this model.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nptm.models import MODELS  # noqa: E402
from nptm.train.loop import Callback  # noqa: E402


def digits_nobn(num_classes: int, in_channels: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))


if "digits_nobn" not in MODELS:
    MODELS.register("digits_nobn", digits_nobn)


class Dump(Callback):
    def __init__(self, folder: Path):
        self.folder = folder

    def on_fit_end(self, trainer):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        path = self.folder / f"rank{rank}" / (trainer.name.replace("/", "__") + ".pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": trainer.model.state_dict(), "world_size": trainer.world_size,
                    "masks": trainer.masks.state_dict() if trainer.masks is not None else None}, path)


class Fail(Callback):
    def __init__(self, rank: int, after: int, how: str):
        self.rank, self.left, self.how = rank, after, how

    def on_epoch_end(self, trainer, epoch):
        if trainer.rank != self.rank:
            return
        self.left -= 1
        if self.left == 0:
            print(f"dist_worker: rank {trainer.rank} simulates a {self.how}", file=sys.stderr, flush=True)
            if self.how == "exit":
                os._exit(17)
            time.sleep(3600)


def main() -> int:
    from nptm.study.cli import main as train_main

    p = argparse.ArgumentParser()
    p.add_argument("--dump", type=Path)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--fail-after", type=int, default=1)
    p.add_argument("--fail-how", choices=("exit", "hang"), default="exit")
    args, rest = p.parse_known_args()
    rest = rest[1:] if rest[:1] == ["--"] else rest
    callbacks = ([Dump(args.dump)] if args.dump else []) + [Fail(args.fail_rank, args.fail_after, args.fail_how)]
    return train_main(rest, callbacks=callbacks)


if __name__ == "__main__":
    from nptm.study.exits import end

    end(main())

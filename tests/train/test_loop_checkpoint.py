import os
import random

import numpy as np

import pytest
import torch
from torch import nn

from nptm.data.loaders import TensorLoader
from nptm.pruning import prune_unstructured
from nptm.schedules.retrain import Schedule
from nptm.train.callbacks import Checkpoint, Evaluate
from nptm.train.checkpoint import (CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state)
from nptm.train.loop import Trainer, TrainingDiverged
from tests.conftest import assert_bitwise_equal


def toy(n=40, nan_at=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    if nan_at is not None:
        x[nan_at] = float("nan")
    return TensorLoader(x, y, 4, shuffle=False), TensorLoader(x, y, 16, shuffle=False)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def constant(lr, iters):
    return Schedule("const", iters, lambda it: lr)


def test_nan_loss_stops_with_epoch_and_step():
    train, _ = toy(nan_at=9)  # batch size 4, no shuffle: sample 9 is in step 3
    trainer = Trainer(net(), train, constant(0.1, 20), epochs=2, name="phase-x")
    with pytest.raises(TrainingDiverged, match=r"phase-x: the loss became NaN/Inf at epoch 1/2, step 3/10"):
        trainer.fit()
    assert trainer.iteration == 3


def test_masks_stay_applied_and_lr_follows_schedule():
    train, test = toy()
    model = net()
    masks = prune_unstructured(model, "magnitude", 0.5)
    lrs = [0.1 / (1 + it) for it in range(20)]
    seen = []

    class Spy(Evaluate):
        def on_step_end(self, trainer, step, loss):
            seen.append(trainer.optimizer.param_groups[0]["lr"])
            w = model[0].weight
            assert torch.all(w[~masks["0.weight"]] == 0)
            buf = trainer.optimizer.state[w]["momentum_buffer"]
            assert torch.all(buf[~masks["0.weight"]] == 0)

    trainer = Trainer(model, train, Schedule("s", 20, lambda it: lrs[it]), epochs=2, masks=masks, callbacks=[Spy(test)])
    trainer.fit()
    assert seen == lrs and trainer.iteration == 20 and len(trainer.history) == 2
    assert trainer.optimizer.param_groups[0]["nesterov"]


def test_resume_from_epoch_checkpoint_is_bitwise_identical(tmp_path):
    train, test = toy()
    sched = Schedule("s", 30, lambda it: 0.05 * (1 - it / 30))

    def run(stop_after=None, resume=None):
        model = net()
        masks = prune_unstructured(model, "random", 0.3, generator=torch.Generator().manual_seed(1))
        cbs = [Evaluate(test), Checkpoint(tmp_path / "c.pt")]
        loader = TensorLoader(train.inputs, train.labels, 4, shuffle=True, seed=5)
        trainer = Trainer(model, loader, sched, epochs=3, masks=masks, callbacks=cbs)
        if resume:
            state = load_checkpoint(resume)
            trainer.load_state_dict(state["trainer"])
            set_rng_state(state["rng"])
        if stop_after:
            trainer.epochs = stop_after
        trainer.fit()
        trainer.epochs = 3
        return trainer

    full = run()
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}
    run(stop_after=1)
    resumed = run(resume=tmp_path / "c.pt")
    for k, v in resumed.model.state_dict().items():
        assert_bitwise_equal(v, reference[k])
    assert resumed.history == full.history and resumed.iteration == full.iteration


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    path = tmp_path / "x.pt"
    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    payload = {"model": net().state_dict(), "rng": state, "results": [{"top1": 0.5, "name": "a"}], "done": True}
    save_checkpoint(path, payload)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert loaded["results"] == payload["results"]
    for k, v in payload["model"].items():
        assert_bitwise_equal(loaded["model"][k], v)
    set_rng_state(loaded["rng"])
    assert_bitwise_equal(torch.rand(3), a[0])
    assert np.array_equal(np.random.rand(3), a[1]) and random.random() == a[2]


def test_checkpoint_refuses_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    save_checkpoint(path, {"model": net().state_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable checkpoint .*truncated or corrupt"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)  # a valid torch file, but not ours
    with pytest.raises(CheckpointError, match="not an nptm.train checkpoint"):
        load_checkpoint(path)
    torch.save(nn.Linear(2, 2), path)  # a pickled module: refused by weights_only
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    save_checkpoint(path, {"v": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        save_checkpoint(path, {"v": Boom()})
    assert load_checkpoint(path)["v"] == 1 and sorted(os.listdir(tmp_path)) == ["x.pt"]

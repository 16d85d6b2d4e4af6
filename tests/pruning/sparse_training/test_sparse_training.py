"""Every pruning-stable method trained by nptm's Trainer on a tiny model and random data: finite losses, exactly the
target sparsity after ``finish``, the sparsity reached measured (a method that stopped sparsifying fails), a run
stopped after an epoch and resumed from the checkpoint equal to the uninterrupted one, linears only with
``include_linear``, channels_last kept."""
import dataclasses
import math

import pytest
import torch
from torch import nn

from nptm.data.loaders import TensorLoader
from nptm.pruning import prunable_weights
from nptm.pruning.sparse_training import SPARSE_TRAINING, SparseTraining
from nptm.pruning.sparse_training.base import magnitude_masks
from nptm.schedules.retrain import Schedule
from nptm.train.callbacks import Checkpoint
from nptm.train.checkpoint import load_checkpoint, set_rng_state
from nptm.train.loop import Trainer
from nptm.train.optim import build_optimizer
from tests.conftest import assert_bitwise_equal

METHODS = list(SPARSE_TRAINING.names())
EPOCHS, BATCH, SPARSITY = 3, 8, 0.7
# options that make every method act within 15 iterations (STR's default threshold is too far for 15 steps)
QUICK = {"dpf": {"every": 2}, "str": {"s_init": -4.0}, "lc": {"steps": 5}}


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(128, 3))


def data(channels_last=False, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    return TensorLoader(x.to(device), y.to(device), BATCH, shuffle=True, seed=3, channels_last=channels_last)


def train(name, *, include_linear=True, channels_last=False, stop_after=None, resume=None, checkpoint=None,
          device="cpu"):
    model = tiny().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = data(channels_last, device)
    method = SPARSE_TRAINING[name](**QUICK.get(name, {}))
    ipe = len(loader)
    method.prepare(model, sparsity=SPARSITY, total_iters=EPOCHS * ipe, iters_per_epoch=ipe, include_linear=include_linear)
    schedule = Schedule("c", EPOCHS * ipe, lambda it: 0.05 * (1 - it / 20))
    callbacks = [method] + ([Checkpoint(checkpoint)] if checkpoint else [])  # the methods never read .epochs
    trainer = Trainer(model, loader, schedule, epochs=stop_after or EPOCHS, callbacks=callbacks, device=device)
    trainer.optimizer = build_optimizer("nesterov", method.param_groups(model, 1e-3), lr=0.05, momentum=0.9,
                                        weight_decay=1e-3)
    state = load_checkpoint(resume) if resume else None
    if state:  # the model and optimizer of epoch 1, then the RNG streams
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["rng"])
    return model, method, trainer.fit()


def test_registry_lists_every_method_with_documented_options():
    assert METHODS == ["gsm", "dpf", "dnw", "str", "cs", "lc"]
    for name in METHODS:
        cls = SPARSE_TRAINING[name]
        assert issubclass(cls, SparseTraining) and cls.name == name and cls.paper and cls.__doc__
        assert all(f.metadata.get("help") and f.default is not dataclasses.MISSING for f in cls.options())
    assert [n for n in METHODS if SPARSE_TRAINING[n].reaches_sparsity] == ["str", "cs"]


@pytest.mark.parametrize("name", METHODS)
def test_trains_and_ends_at_exactly_the_target(name, device):
    dense_keys = list(tiny().state_dict())
    model, method, trainer = train(name, device=device)
    assert trainer.iteration == EPOCHS * 5 and math.isfinite(trainer.metrics["train_loss"])
    masks, reached, final, change = method.finish(model)
    params = prunable_weights(model, include_linear=True)
    n = sum(w.numel() for w in params.values())
    assert list(masks) == list(params) == ["0.weight", "3.weight", "6.weight"]
    assert masks.nonzero() == n - round(SPARSITY * n)
    assert all(int(w[~masks[k]].count_nonzero()) == 0 and torch.isfinite(w).all() for k, w in params.items())
    assert list(model.state_dict()) == dense_keys  # plain weights again, in their places
    assert final == masks.sparsity() == 1 - masks.nonzero() / n and 0 <= reached <= final and 0 <= change <= 1
    assert torch.isfinite(model(torch.randn(2, 1, 8, 8, device=device))).all()


def test_reached_sparsity_is_the_methods_own_before_the_projection():
    model, method, _ = train("str")
    taus = [torch.sigmoid(p.s).item() for p in method.parametrizations(model)]
    own = sum(int((w.abs() <= t).sum()) for w, t in zip(method.dense(model), taus)) / method.numel
    masks, reached, *_ = method.finish(model)
    assert 0 < own < SPARSITY and reached == pytest.approx(own) and masks.sparsity() > reached


@pytest.fixture(scope="module")
def dense_change():
    """What the projection removes from the same model trained with no method: ||w - P(w)||^2 / ||w||^2."""
    model, loader = tiny(), data()
    trainer = Trainer(model, loader, Schedule("c", EPOCHS * 5, lambda it: 0.05 * (1 - it / 20)), epochs=EPOCHS)
    trainer.optimizer = build_optimizer("nesterov", model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    trainer.fit()
    weights = [w.detach() for w in prunable_weights(model, include_linear=True).values()]
    keep = magnitude_masks(weights, round(SPARSITY * sum(w.numel() for w in weights)))
    return sum(float((w * ~k).square().sum()) for w, k in zip(weights, keep)) / sum(
        float(w.square().sum()) for w in weights)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_sparsifies_the_weights_its_forward_uses(name, dense_change):
    """Measured, not assigned: DPF and DNW compute with exactly the target's zeros; GSM and LC have no exact zeros
    but leave the projection little to remove; STR and CS reach zeros of their own in 15 steps."""
    model, method, _ = train(name)
    n = method.numel
    _, reached, final, change = method.finish(model)
    assert final == round(SPARSITY * n) / n and 0.15 < dense_change < 0.5
    if name in ("dpf", "dnw"):
        assert reached == final and change == 0
    elif name in ("gsm", "lc"):
        assert reached == 0 and change < dense_change / 3
    else:
        assert reached > 0.25 and change < dense_change


@pytest.mark.parametrize("name", METHODS)
def test_resumed_run_equals_the_uninterrupted_one(name, tmp_path):
    full_model, full, _ = train(name)
    full_masks, full_reached, *_ = full.finish(full_model)
    train(name, stop_after=1, checkpoint=tmp_path / "c.pt")
    model, method, trainer = train(name, resume=tmp_path / "c.pt")
    assert trainer.iteration == EPOCHS * 5
    masks, reached, *_ = method.finish(model)
    assert reached == full_reached and all(torch.equal(masks[k], full_masks[k]) for k in masks)
    for k, v in model.state_dict().items():
        assert_bitwise_equal(v, full_model.state_dict()[k])


@pytest.mark.parametrize("name", METHODS)
def test_linears_only_with_include_linear(name):
    model, method, _ = train(name, include_linear=False)
    assert method.names == ("0.weight", "3.weight")
    head = model[6].weight
    assert head.requires_grad and type(model[6]) is nn.Linear  # not reparametrized
    masks = method.finish(model).masks
    assert list(masks) == ["0.weight", "3.weight"] and int(head.count_nonzero()) == head.numel()


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_models_keep_their_layout_and_results(name):
    ref, ref_method, _ = train(name)
    ref_masks = ref_method.finish(ref).masks
    model, method, _ = train(name, channels_last=True)
    masks = method.finish(model).masks
    assert all(model[i].weight.is_contiguous(memory_format=torch.channels_last) for i in (0, 3))
    assert all(torch.equal(masks[k], ref_masks[k]) for k in masks)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_refused_with_the_method_named():
    gsm = SPARSE_TRAINING["gsm"]()
    with pytest.raises(ValueError, match=r"gsm: the sparsity must be in \[0, 1\), got 1.0"):
        gsm.prepare(tiny(), sparsity=1.0, total_iters=10, iters_per_epoch=5)
    with pytest.raises(ValueError, match="dnw: ReLU has no prunable weights"):
        SPARSE_TRAINING["dnw"]().prepare(nn.ReLU(), sparsity=0.5, total_iters=10, iters_per_epoch=5)
    with pytest.raises(ValueError, match="dpf: the GMP window .* has 0 iterations"):
        SPARSE_TRAINING["dpf"](window=(0.5, 0.5)).prepare(tiny(), sparsity=0.5, total_iters=10, iters_per_epoch=5)
    with pytest.raises(ValueError, match="lc: needs at least one LC step"):
        SPARSE_TRAINING["lc"](steps=0).prepare(tiny(), sparsity=0.5, total_iters=10, iters_per_epoch=5)

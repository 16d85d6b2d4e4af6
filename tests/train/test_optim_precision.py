"""--optimizer and --precision: what each builds, masks on AdamW's states, bf16 on the CPU, fp16 refused there."""
import pytest
import torch

from nptm.data import DataConfig, build_dataset
from nptm.models import build_model
from nptm.pruning import prune_unstructured
from nptm.schedules import Schedule
from nptm.study.cli import main
from nptm.study.config import parse_args
from nptm.train.loop import Trainer
from nptm.train.optim import OPTIMIZERS, build_optimizer
from nptm.train.precision import autocast, grad_scaler, resolve_precision
from nptm.study.presets import PRESETS, preset_values


def test_optimizers():
    params = [torch.nn.Parameter(torch.zeros(3))]
    nesterov = build_optimizer("nesterov", params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sgd = build_optimizer("sgd", params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    adamw = build_optimizer("adamw", params, lr=0.1, momentum=0.8, weight_decay=1e-4)
    assert isinstance(nesterov, torch.optim.SGD) and nesterov.defaults["nesterov"]
    assert isinstance(sgd, torch.optim.SGD) and not sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.999)
    assert set(OPTIMIZERS) == {"nesterov", "sgd", "adamw"}
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer("lamb", params, lr=0.1, momentum=0.9, weight_decay=0)


def test_presets_use_plain_momentum_and_flags_choose():
    assert all(preset_values(p)["optimizer"] == "sgd" for p in PRESETS)
    assert parse_args([])[0].training.optimizer == "nesterov"
    assert parse_args(["--optimizer", "adamw", "--precision", "bf16"])[0].training.precision == "bf16"


def _train(optimizer="nesterov", precision="auto", masks=None, model=None):
    data = build_dataset(DataConfig(name="digits", batch_size=64))
    torch.manual_seed(0)
    model = model or build_model("digits_net", 10, 1)
    t = Trainer(model, data.train, Schedule("c", 10**6, lambda it: 0.01), epochs=1, masks=masks, optimizer=optimizer,
                precision=precision)
    t.fit()
    return t


def test_adamw_keeps_pruned_weights_and_states_at_zero():
    torch.manual_seed(0)
    model = build_model("digits_net", 10, 1)
    masks = prune_unstructured(model, "magnitude", 0.8)
    t = _train("adamw", masks=masks, model=model)
    assert isinstance(t.optimizer, torch.optim.AdamW)
    for name, m in masks.items():
        p = model.get_parameter(name)
        state = t.optimizer.state[p]
        assert p[~m].count_nonzero() == 0 and state["exp_avg"][~m].count_nonzero() == 0
        assert state["exp_avg_sq"][~m].count_nonzero() == 0


def test_precision_on_the_cpu():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    assert grad_scaler("cpu", "bf16") is None and grad_scaler("cuda", "fp16") is not None
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    lin = torch.nn.Linear(4, 4)
    with autocast("cpu", "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    fp32, bf16 = _train(precision="fp32"), _train(precision="bf16")
    assert bf16.precision == "bf16" and all(torch.isfinite(p).all() for p in bf16.model.parameters())
    assert bf16.metrics["train_loss"] < 2.3  # it learns (chance: ln 10)
    assert not torch.equal(fp32.model.features[0].weight, bf16.model.features[0].weight)  # autocast was on


def test_fp16_on_the_cpu_is_refused(tmp_path, capsys):
    for argv in (["--device", "cpu"], []):  # explicit, and resolved from auto
        code = main(["--precision", "fp16", *argv, "--epochs", "1", "--retrain-epochs", "1", "--seeds", "0,",
                     "--quiet", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        if torch.cuda.is_available() and not argv:
            continue
        assert code == 2 and err.count("\n") == 1 and "--precision fp16 needs a CUDA device" in err
        assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fp16_with_grad_scaler_on_cuda():
    data = build_dataset(DataConfig(name="digits", batch_size=64, device="cuda"))
    model = build_model("digits_net", 10, 1).cuda()
    t = Trainer(model, data.train, Schedule("c", 10**6, lambda it: 0.01), epochs=1, device="cuda", precision="fp16")
    t.fit()
    assert t.scaler is not None and t.state_dict()["scaler"]["scale"] > 0 and t.metrics["train_loss"] < 2.3

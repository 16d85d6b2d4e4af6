"""The study CLI on ImageNet- and CIFAR-style data: .beton and image-folder inputs, the ffcv-imagenet presets."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from fakedata import make_cifar_folder, make_image_folder  # noqa: E402
from nptm.data import DataConfig, DataError, build_dataset  # noqa: E402
from nptm.data.loaders import TensorLoader, ffcv_available  # noqa: E402
from nptm.pruning import prunable_weights  # noqa: E402
from nptm.schedules import Schedule  # noqa: E402
from nptm.models import build_model  # noqa: E402
from nptm.study.cli import main  # noqa: E402
from nptm.study.config import ConfigError, parse_args  # noqa: E402
from nptm.study.validation import validate  # noqa: E402
from nptm.train.evaluate import evaluate  # noqa: E402
from nptm.train.loop import Callback, Trainer  # noqa: E402
from nptm.study.presets import IMAGENET_PRESET, ffcv_imagenet_lr  # noqa: E402

# numba's finalizer of a second ffcv JPEG decoder raises a harmless KeyError when loaders are freed (test_ffcv.py)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning")
needs_ffcv = pytest.mark.skipif(not ffcv_available(), reason="needs ffcv")
TINY = ["--epochs", "1", "--retrain-epochs", "1", "--schedules", "FT", "--pruner", "magnitude", "--seeds", "1",
        "--batch-size", "8", "--workers", "1", "--quiet"]


def write_beton(source, out, *args):
    from nptm.data.__main__ import main as data_main

    assert data_main(["write", "--source", source, "--out", str(out), "--workers", "1", *args]) == 0


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """train/ (3 classes x 8) and val/ (3 x 4) JPEG folders, and their train.beton / val.beton when ffcv imports."""
    root = tmp_path_factory.mktemp("imagenet")
    make_image_folder(root / "train", classes=3, per_class=8, max_side=72, min_side=40, seed=1)
    make_image_folder(root / "val", classes=3, per_class=4, max_side=72, min_side=40, seed=2)
    if ffcv_available():
        for split in ("train", "val"):
            write_beton(f"imagefolder:{root / split}", root / f"{split}.beton", "--max-resolution", "64")
    return root


def run_study(argv, capsys, callbacks=()):
    code = main(argv, callbacks=callbacks)
    err = capsys.readouterr().err
    assert code == 0, err
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "results.json").read_text())


def check_records(records, dataset, model, n_train, batch, num_classes):
    assert [(r["kind"], r["pruner"], r["schedule"], r["seed"]) for r in records] == [
        ("dense", "-", "original", 0), ("retrain", "magnitude", "FT", 0)]
    n = sum(w.numel() for w in prunable_weights(build_model(model, num_classes, 3)).values())
    dense, ft = records
    for r in records:
        assert r["config"]["data"]["dataset"] == dataset and r["config"]["model"]["model"] == model
        assert r["iters_per_epoch"] == n_train // batch and 0 <= r["top1"] <= 1
        assert [h["epoch"] for h in r["history"]] == list(range(1, r["epochs"] + 1))
    assert dense["sparsity"] == 0 and ft["sparsity"] == 1 - (n - round(0.9 * n)) / n
    assert len(set(ft["lr_trace"]["lr"])) == 1  # FT: constant eta_min


@needs_ffcv
def test_imagenet_from_beton_files(imagenet_dir, tmp_path, capsys):
    out = tmp_path / "out"
    records = run_study(["--dataset", "imagenet", "--data-dir", str(imagenet_dir), "--model", "resnet18", *TINY,
                         "--train-resolution", "32", "--val-resolution", "32", "--out", str(out)], capsys)
    check_records(records, "imagenet", "resnet18", 24, 8, 3)
    assert records[1]["lr_trace"]["lr"][0] == pytest.approx(0.1 * 0.1 ** 2)  # ImageNet default: 0.1, two drops
    assert (out / "table.txt").is_file() and (out / "config.json").is_file()


class Resolutions(Callback):
    """Each phase's training resolution per epoch, read from the loader."""

    def __init__(self):
        self.seen = {}

    def on_epoch_start(self, trainer, epoch):
        self.seen.setdefault(trainer.name, []).append(trainer.loader.resolution)


def test_imagenet_preset_from_image_folders(imagenet_dir, tmp_path, capsys):
    """--preset on the torchvision+PIL loader: linear warm-up/decay lr, progressive resizing stretched
    over each phase, label smoothing and test-time flip."""
    lr, epochs = 0.01, 2
    argv = ["--preset", "rn18_16", "--data-dir", str(imagenet_dir), "--loader", "torchvision", *TINY,
            "--epochs", str(epochs), "--retrain-epochs", "4", "--lr", str(lr), "--workers", "0",
            "--progressive-resize", "32,64,0.25,0.5", "--val-resolution", "32", "--out", str(tmp_path / "out")]
    resolutions = Resolutions()
    records = run_study(argv, capsys, [resolutions])
    check_records(records, "imagenet", "resnet18", 24, 8, 3)
    dense, ft = records
    assert dense["config"]["training"]["label_smoothing"] == 0.1 and dense["config"]["training"]["tta_flip"]
    warmup = epochs * 2 / 16  # peak at epoch min(2, T / 8)
    ipe = dense["iters_per_epoch"]
    expected = [ffcv_imagenet_lr(it / ipe, lr, epochs, peak_epoch=warmup) for it in range(epochs * ipe)]
    np.testing.assert_allclose(dense["lr_trace"]["lr"], expected, rtol=1e-12)
    assert ft["lr_trace"]["lr"][0] == pytest.approx(lr / (epochs - warmup))  # eta_min: one epoch before the end
    # MIN until START, MAX from END, as fractions of each phase: 2 dense epochs, then 4 retraining epochs
    assert resolutions.seen == {"s0/dense": [32, 64], "s0/magnitude-0.9/FT/c1": [32, 32, 64, 64]}


@needs_ffcv
def test_cifar_from_beton_files(tmp_path, capsys):
    make_cifar_folder(tmp_path / "src", "cifar10", n_train=40, n_test=16)
    data = tmp_path / "betons"
    for split in ("train", "test"):
        write_beton(f"cifar10:{tmp_path / 'src'}", data / f"{split}.beton", "--split", split)
    spec = build_dataset(DataConfig(name="cifar10", data_dir=str(data), batch_size=8, workers=1, loader="ffcv"))
    from nptm.data.loaders.ffcv_loader import FFCVLoader

    assert isinstance(spec.train, FFCVLoader) and (spec.num_classes, spec.train_examples) == (10, 40)
    records = run_study(["--dataset", "cifar10", "--data-dir", str(data), "--model", "resnet20", *TINY,
                         "--out", str(tmp_path / "out")], capsys)
    check_records(records, "cifar10", "resnet20", 40, 8, 10)


@needs_ffcv
def test_cifar_loader_choice(tmp_path, capsys):
    from nptm.data.loaders.ffcv_loader import FFCVLoader

    make_cifar_folder(tmp_path, "cifar10", n_train=20, n_test=10)
    cfg = dict(name="cifar10", data_dir=str(tmp_path), batch_size=4, workers=1)
    assert isinstance(build_dataset(DataConfig(**cfg)).train, TensorLoader)  # no .beton files: python files
    with pytest.raises(DataError, match="lacks train.beton, test.beton"):
        build_dataset(DataConfig(**cfg, loader="ffcv"))
    python_files = build_dataset(DataConfig(**cfg))
    for split in ("train", "test"):
        write_beton(f"cifar10:{tmp_path}", tmp_path / f"{split}.beton", "--split", split)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()  # auto now reads the .beton files only
    auto = build_dataset(DataConfig(**cfg))  # decoded into memory: the in-memory path, bit for bit
    assert isinstance(auto.train, TensorLoader) and "nptm:" not in capsys.readouterr().err
    assert (len(auto.train), auto.train_examples) == (len(python_files.train), python_files.train_examples)
    for a, b in zip([*auto.train, *auto.test], [*python_files.train, *python_files.test]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert isinstance(build_dataset(DataConfig(**cfg, loader="ffcv")).train, FFCVLoader)  # streamed


def test_cifar_missing_data_names_both_layouts(tmp_path, capsys):
    (tmp_path / "train.beton").write_bytes(b"")  # one .beton alone does not count
    code = main(["--dataset", "cifar10", "--data-dir", str(tmp_path), *TINY, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cifar-10-batches-py lacks data_batch_1" in err and f"put train.beton and test.beton in {tmp_path}" in err


def resolved(*argv):
    cfg = parse_args(list(argv))[0].resolve()
    validate(cfg)
    return cfg


def test_preset_values():
    """rn18_16 as in ffcv-imagenet's rn18_configs/rn18_16_epochs.yaml."""
    p = IMAGENET_PRESET["rn18_16"]
    cfg = resolved("--preset", "rn18_16", "--epochs", "1")
    d, t, s = cfg.data, cfg.training, cfg.schedule
    assert (d.dataset, cfg.model.model, d.batch_size, t.epochs, t.retrain_epochs) == ("imagenet", "resnet18", 1024, 1, (1,))
    assert (t.lr, t.weight_decay, t.momentum, t.label_smoothing, t.tta_flip) == (0.5, 5e-5, 0.9, 0.1, True)
    assert (s.decay, s.warmup_epochs, d.val_resolution) == ("linear", 1 / 8, 256)
    assert d.progressive_resize == (160, 192, 11 / 16, 13 / 16) and d.train_resolution is None
    full = resolved("--preset", "rn18_16")
    assert (full.training.epochs, full.training.retrain_epochs, full.schedule.warmup_epochs) == (16, (8,), 2)
    assert resolved("--preset", "rn50_88", "--epochs", "40").schedule.warmup_epochs == p["lr_peak_epoch"]
    rn50 = resolved("--preset", "rn50_16")
    assert (rn50.model.model, rn50.data.batch_size, rn50.training.lr) == ("resnet50", 512 * 8, 1.7)


def test_explicit_values_override_the_preset(tmp_path):
    cfg = resolved("--preset", "rn18_16", "--lr", "0.2", "--batch-size", "256", "--model", "resnet50",
                   "--no-tta-flip", "--label-smoothing", "0", "--train-resolution", "64", "--warmup-epochs", "3")
    assert (cfg.training.lr, cfg.data.batch_size, cfg.model.model) == (0.2, 256, "resnet50")
    assert (cfg.training.tta_flip, cfg.training.label_smoothing, cfg.schedule.warmup_epochs) == (False, 0.0, 3.0)
    assert (cfg.data.train_resolution, cfg.data.progressive_resize) == (64, None)
    assert parse_args(cfg.to_argv())[0] == cfg
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"training": {"epochs": 4}, "decay": "step"}))
    from_file = resolved("--config", str(path), "--preset", "rn18_16")
    assert (from_file.training.epochs, from_file.training.retrain_epochs, from_file.schedule.decay) == (4, (2,), "step")
    assert from_file.schedule.warmup_epochs == 0.5


@pytest.mark.parametrize("argv, message", [
    (["--preset", "rn18_16", "--dataset", "cifar10"], "ImageNet recipe"),
    (["--preset", "rn99"], "--preset"),
    (["--dataset", "cifar10", "--train-resolution", "32"], "applies to image-folder datasets .imagefolder, imagenet."),
    (["--dataset", "imagenet", "--progressive-resize", "160,192,0.8,0.5"], "--progressive-resize"),
    (["--dataset", "imagenet", "--progressive-resize", "160,192,0.5"], "--progressive-resize"),
    (["--preset", "rn18_16", "--train-resolution", "64", "--progressive-resize", "32,64,0,1"], "both set"),
    (["--epochs", "2", "--warmup-epochs", "2"], "--warmup-epochs"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--dataset", "imagenet", "--val-resolution", "0"], "--val-resolution must be at least 1"),
    (["--decay", "cosine"], "--decay"),
    (["--loader", "ffcv"], "--loader applies to datasets read from files .*not digits"),
])
def test_bad_imagenet_options(argv, message):
    with pytest.raises(ConfigError, match=message):
        resolved(*argv)


def test_label_smoothing_and_tta_flip():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 4, 5, generator=gen), torch.randint(0, 4, (6,), generator=gen)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, 4))
    expected = F.cross_entropy(model(x), y, label_smoothing=0.2).item()
    loader = type("Loader", (list,), {"set_epoch": lambda self, epoch: None})([(x, y)])
    trainer = Trainer(model, loader, Schedule("c", 1, lambda it: 0.1), epochs=1, label_smoothing=0.2).fit()
    assert trainer.metrics["train_loss"] == pytest.approx(expected, rel=1e-6)  # the loss before the step
    logits = (model(x) + model(x.flip(-1))) / 2
    ev = evaluate(model, [(x[:4], y[:4]), (x[4:], y[4:])], "cpu", tta_flip=True)
    assert ev["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert ev["top1"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert evaluate(model, [(x, y)], "cpu")["loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)

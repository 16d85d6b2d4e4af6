"""README "Use nptm in your own training loop / From the command line": a trained model file and an image
folder, run as ``python -m nptm.train --dataset imagefolder --data-dir DIR --model NAME --dense-checkpoint FILE``."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from fakedata import make_image_folder  # noqa: E402
from nptm.data import DataConfig, build_dataset  # noqa: E402
from nptm.models import build_model  # noqa: E402
from nptm.study.cli import main  # noqa: E402
from nptm.train.evaluate import evaluate  # noqa: E402

SMALL = ["--train-resolution", "32", "--val-resolution", "32", "--batch-size", "8", "--epochs", "4",
         "--retrain-epochs", "1", "--seeds", "0,", "--pruner", "magnitude", "--sparsity", "0.5", "--schedules", "FT,LLR",
         "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    make_image_folder(root / "train", classes=3, per_class=8, max_side=64, min_side=32, seed=1)
    make_image_folder(root / "val", classes=3, per_class=3, max_side=64, min_side=32, seed=2)
    return root


def test_trained_torchvision_model_on_an_image_folder(image_dir, tmp_path, capsys):
    torch.manual_seed(7)
    trained = build_model("mobilenet_v3_small", 3)
    path = tmp_path / "mobilenet.pth"
    torch.save({"model": trained.state_dict(), "epoch": 90}, path)  # a training script's wrapper
    out = tmp_path / "out"
    assert main(["--dataset", "imagefolder", "--data-dir", str(image_dir), "--model", "mobilenet_v3_small",
                 "--dense-checkpoint", str(path), *SMALL, "--out", str(out),
                 "--max-layer-sparsity", "0.99"]) == 0  # global magnitude would empty two depthwise convs of its init
    records = json.loads((out / "results.json").read_text())
    dense = records[0]
    assert dense["kind"] == "dense" and dense["dense_checkpoint"] == str(path)
    data = build_dataset(DataConfig(name="imagefolder", data_dir=str(image_dir), batch_size=8, workers=0,
                                    train_resolution=32, val_resolution=32))
    assert dense["top1"] == evaluate(trained, data.test)["top1"]  # the loaded model, evaluated as it is
    assert [r["schedule"] for r in records[1:]] == ["FT", "LLR"]
    assert all(r["sparsity"] == pytest.approx(0.5, abs=1e-3) and r["epochs"] == 1 for r in records[1:])
    assert all(r["empty_layers"] == [] and max(r["per_layer_sparsity"].values()) <= 0.99 for r in records[1:])
    # the retraining schedules are defined against the original one: --epochs 4, lr 0.1, milestones 1/3, 2/3
    assert records[1]["lr_trace"]["lr"][0] == pytest.approx(0.1 * 0.1 * 0.1)


def test_own_factory_model(image_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "shop_models.py").write_text(
        "import torch.nn as nn\n"
        "def small_cnn(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3),\n"
        "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    assert main(["--dataset", "imagefolder", "--data-dir", str(image_dir), "--model", "shop_models:small_cnn",
                 *SMALL, "--optimizer", "adamw", "--lr", "0.01", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert records[0]["kind"] == "dense" and records[0]["epochs"] == 4 and len(records) == 3
    capsys.readouterr()
    code = main(["--dataset", "imagefolder", "--data-dir", str(image_dir), "--model", "shop_models:nope",
                 *SMALL, "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "shop_models has no nope" in err

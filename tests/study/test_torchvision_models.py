"""A torchvision model whose state dict carries version metadata (``mnasnet0_5``: its BatchNorm layers' versions)
through the study with ``--pruner l1_filters``: the unit store keeps the metadata, so the pruning unit can load the
dense model it saved. (Every torchvision classification model: ``benchmarks/torchvision_studies.py``.)"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from fakedata import make_image_folder  # noqa: E402
from nptm.study.cli import main  # noqa: E402


def test_mnasnet_filter_pruned_through_the_study(tmp_path, capsys):
    data = tmp_path / "data"
    make_image_folder(data / "train", classes=2, per_class=4, max_side=40, min_side=32, seed=1)
    make_image_folder(data / "val", classes=2, per_class=2, max_side=40, min_side=32, seed=2)
    out = tmp_path / "out"
    assert main(["--dataset", "imagefolder", "--data-dir", str(data), "--model", "mnasnet0_5", "--pruner", "l1_filters",
                 "--sparsity", "0.3", "--epochs", "1", "--retrain-epochs", "1", "--schedules", "FT", "--seeds", "0,",
                 "--train-resolution", "32", "--val-resolution", "32", "--batch-size", "4", "--workers", "0",
                 "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    dense, pruned = json.loads((out / "results.json").read_text())
    assert dense["kind"] == "dense" and pruned["schedule"] == "FT"
    assert pruned["params_total"] < dense["params_total"]  # filters removed: a smaller model

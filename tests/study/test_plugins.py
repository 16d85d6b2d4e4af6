"""Adding a schedule, a criterion, a model or a dataset is one new file in its package: each is written here as a
temporary module, discovered by its registry, and run through the study's command line on a tiny dataset."""
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME = f"zz_plugin_{uuid.uuid4().hex[:8]}"  # a public module name, so that discovery imports it
PLUGINS = {
    "nptm/schedules": '''
        from nptm.schedules.retrain import Schedule, retrain_schedule


        @retrain_schedule("HALF")
        def half(o, n, ipe, t_rt, **_):
            """Half the original peak lr, constant."""
            return Schedule("HALF", n, lambda it: o.eta_max / 2)
    ''',
    "nptm/pruning/criteria": '''
        from nptm.pruning.criteria.base import CRITERIA, Criterion


        @CRITERIA.register("doubled")
        class Doubled(Criterion):
            def scores(self, model, params, *, loader=None, generator=None):
                return {n: 2 * w.detach().abs() for n, w in params.items()}
    ''',
    "nptm/models": '''
        from torch import nn

        from nptm.models.registry import MODELS


        @MODELS.register("tiny_cnn")
        def tiny_cnn(num_classes, in_channels=3):
            return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    ''',
    "nptm/data": '''
        import torch

        from nptm.data.loaders.tensor import TensorLoader
        from nptm.data.registry import DataSpec, register_dataset


        @register_dataset("blobs", defaults=dict(model="tiny_cnn", epochs=2, retrain_epochs=1, batch_size=32, lr=0.05,
                                                 milestones=(0.5,)))
        def build_blobs(cfg):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(240, 1, 8, 8, generator=g)
            y = (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).long()
            train = TensorLoader(x[:200], y[:200], cfg.batch_size, shuffle=True, seed=cfg.seed)
            test = TensorLoader(x[200:], y[200:], 64, shuffle=False)
            return DataSpec(train=train, test=test, num_classes=2, in_channels=1, image_size=8, train_examples=200)
    ''',
}


@pytest.fixture(scope="module")
def plugins():
    paths = [ROOT / folder / f"{NAME}.py" for folder in PLUGINS]
    try:
        for path, text in zip(paths, PLUGINS.values()):
            path.write_text(textwrap.dedent(text).lstrip())
        yield
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nptm.train", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_one_new_file_each_runs_through_the_cli(plugins, tmp_path):
    help_text = " ".join(_cli("--help").stdout.split())
    for name in ("HALF", "doubled", "blobs"):
        assert name in help_text, name
    out = tmp_path / "out"
    proc = _cli("--dataset", "blobs", "--pruner", "doubled,magnitude", "--schedules", "HALF,FT", "--seeds", "0,",
                "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads((out / "results.json").read_text())
    assert {r["config"]["model"]["model"] for r in records} == {"tiny_cnn"}  # the dataset's default model
    runs = {r["run"]: r for r in records}
    assert set(runs) == {"s0/dense"} | {f"s0/{p}-0.9/{s}" for p in ("doubled", "magnitude") for s in ("HALF", "FT")}
    half = runs["s0/doubled-0.9/HALF"]
    assert set(half["lr_trace"]["lr"]) == {0.05 / 2}  # the new schedule's lr
    # 2|w| ranks weights exactly as |w|: the same masks, so the same pruned accuracy
    assert half["pruned_top1"] == runs["s0/magnitude-0.9/HALF"]["pruned_top1"]
    assert half["sparsity"] == pytest.approx(0.9, abs=0.01)

import importlib
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the examples import each other as scripts do
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def check_retrained(model, masks, dense_state):
    assert masks.sparsity() == pytest.approx(0.9, abs=1e-3)
    changed = False
    for n in masks:
        w = model.get_parameter(n)
        assert bool((w[~masks[n]] == 0).all()), n  # pruned weights stayed zero through retraining
        changed |= not torch.equal(w[masks[n]], dense_state[n][masks[n]])
    assert changed  # and the kept ones were retrained


def test_plain_loop_example(monkeypatch, capsys):
    ex = load("prune_retrain_allr", monkeypatch)
    torch.manual_seed(0)
    model, masks = ex.main(["--tiny"])
    out = capsys.readouterr().out
    assert "ALLR d = " in out and "epoch 1:" in out
    fc = model.get_parameter("fc.weight")
    assert "fc.weight" not in masks and bool((fc != 0).all())  # the classifier was spared
    torch.manual_seed(0)
    dense = ex.load_model(ex.parse(["--tiny"]), 10).state_dict()
    check_retrained(model, masks, dense)


def test_hf_trainer_example(monkeypatch):
    # transformers and accelerate are test dependencies (scripts/requirements.txt, the test extra): never skipped
    ex = load("hf_trainer_allr", monkeypatch)
    torch.manual_seed(0)
    model, masks = ex.main(["--tiny"])  # a tiny transformers ResNet from its config
    assert type(model.net.hf).__module__.startswith("transformers.")
    torch.manual_seed(0)
    dense = {f"net.{k}": v for k, v in ex.tiny_model(10).state_dict().items()}
    check_retrained(model, masks, dense)

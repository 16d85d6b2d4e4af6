"""Each criterion against a small hand-computed case; third-party criteria through entry points."""
import math
import sys
import textwrap

import pytest
import torch
from torch import nn

from nptm import ops
from nptm.pruning.criteria import CRITERIA, Criterion, NoCalibrationData
from nptm.pruning.criteria.lamp import lamp_scores


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_lamp_scores_by_hand():
    w = torch.tensor([[3.0, -1.0], [2.0, 0.0]])  # w^2 ascending: 0, 1, 4, 9; tails 14, 14, 13, 9
    torch.testing.assert_close(lamp_scores(w), torch.tensor([[1.0, 1 / 14], [4 / 13, 0.0]], dtype=torch.float64))
    # ties go by flat index: the first of two equal weights has the larger tail
    torch.testing.assert_close(lamp_scores(torch.tensor([1.0, -1.0])), torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert lamp_scores(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_lamp_global_topk_differs_from_magnitude():
    a, b = torch.tensor([2.0, 2.0, 2.0, 2.0]), torch.tensor([1.0, 1.5])
    # LAMP: a -> 1/4, 1/3, 1/2, 1; b -> 1/3.25, 1. Magnitude would prune b entirely.
    scores = CRITERIA["lamp"]().scores(None, {"a": a, "b": b})
    masks = ops.global_magnitude_masks([a, b], 2, scores=[scores["a"], scores["b"]])
    assert masks[0].tolist() == [False, True, True, True] and masks[1].tolist() == [False, True]
    assert [m.tolist() for m in ops.global_magnitude_masks([a, b], 2)] == [[True] * 4, [False, False]]


def _two_batches():
    # batch 1: x = (1, 1), label 0; batch 2: x = (1, 0), label 1
    return [(torch.tensor([[1.0, 1.0]]), torch.tensor([0])), (torch.tensor([[1.0, 0.0]]), torch.tensor([1]))]


def test_taylor_by_hand():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    # batch 1: logits (3, 1), dL/dz = (-a, a) with a = sigmoid(-2); g = dz x^T -> row sums of g*w: -3a, a
    # batch 2: logits (1, 0), dL/dz = (b, -b) with b = sigmoid(1); row sums: b, 0
    a, b = sigmoid(-2), sigmoid(1)
    model.train()
    scores = CRITERIA["taylor"]().scores(model, {"weight": model.weight}, loader=_two_batches())
    torch.testing.assert_close(scores["weight"], torch.tensor([(9 * a * a + b * b) / 2, a * a / 2], dtype=torch.float64))
    assert model.training and model.weight.grad is None  # the model is left as it was


def test_hrank_by_hand():
    conv = nn.Conv2d(1, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, -2.0]).reshape(3, 1, 1, 1))
    images = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]).unsqueeze(1)  # ranks 1 and 2
    loader = [(images[:1], torch.tensor([0])), (images[1:], torch.tensor([0]))]
    scores = CRITERIA["hrank"]().scores(conv, {"weight": conv.weight}, loader=loader)
    assert scores["weight"].dtype == torch.float64 and scores["weight"].tolist() == [1.5, 0.0, 1.5]


def test_hrank_linear_maps_and_nested_names():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    loader = [(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 1]))]  # outputs (1, 0), (0, 0)
    assert CRITERIA["hrank"]().scores(model, {"0.weight": model[0].weight}, loader=loader)["0.weight"].tolist() == [0.5, 0.0]


@pytest.mark.parametrize("name", ["taylor", "hrank"])
def test_data_aware_criteria_need_batches(name):
    model = nn.Linear(2, 2)
    assert CRITERIA[name].needs_data and CRITERIA[name].structured
    with pytest.raises(NoCalibrationData, match="needs calibration batches"):
        CRITERIA[name]().scores(model, {"weight": model.weight})
    with pytest.raises(NoCalibrationData, match="empty"):
        CRITERIA[name]().scores(model, {"weight": model.weight}, loader=[])


def test_third_party_criterion_through_entry_points(tmp_path, monkeypatch):
    pkg = tmp_path / "nptm_extra_criterion"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from nptm.pruning.criteria import Criterion

        class Squared(Criterion):
            def scores(self, model, params, *, loader=None, generator=None):
                return {n: w.detach() ** 2 for n, w in params.items()}
    """))
    dist = tmp_path / "nptm_extra_criterion-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nptm-extra-criterion\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[nptm.criteria]\nsquared = nptm_extra_criterion:Squared\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(CRITERIA, "_items", dict(CRITERIA._items))
    monkeypatch.setattr(CRITERIA, "_loaded", False)
    monkeypatch.delitem(sys.modules, "nptm_extra_criterion", raising=False)
    assert "squared" in CRITERIA.names() and issubclass(CRITERIA["squared"], Criterion)
    w = torch.tensor([-3.0, 2.0])
    assert CRITERIA["squared"]().scores(None, {"w": w})["w"].tolist() == [9.0, 4.0]
    # at once a pruner (one global top-k over its scores) and a --pruner choice
    from nptm.pruning import PRUNERS
    from nptm.study.config import parse_args

    assert (PRUNERS["squared"].algorithm, PRUNERS["squared"].structured) == ("global", False)
    assert parse_args(["--pruner", "magnitude,squared"])[0].pruning.pruner == ("magnitude", "squared")

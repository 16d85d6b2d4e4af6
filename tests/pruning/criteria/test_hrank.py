"""HRank on every layer kind structured pruning marks prunable, at the authors' point (after the activation) and at
the producer's output; expected ranks worked out by hand from the maps."""
import pytest
import torch
from torch import nn

from nptm.pruning.criteria import CRITERIA
from nptm.pruning.criteria.hrank import HRank
from nptm.pruning.structured import select_channels

RANK1 = [[1.0, 2.0], [2.0, 4.0]]  # rank 1
RANK2 = [[1.0, 0.0], [0.0, 1.0]]  # rank 2


def _set(layer, rows):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows).reshape(layer.weight.shape))
    return layer


def _scores(model, name, loader, point=None):
    crit = HRank(point) if point else CRITERIA["hrank"]()
    return crit.scores(model, {name: model.get_submodule(name.rpartition(".")[0]).weight}, loader=loader)[name].tolist()


def test_conv1d_channels_are_ranked_as_one_row_maps():
    model = nn.Sequential(_set(nn.Conv1d(1, 3, 1, bias=False), [1.0, 0.0, -2.0]), nn.ReLU())
    x = -torch.rand(2, 1, 5) - 0.5  # negative: channel 0 is all zero after the ReLU, channel 2 positive
    assert _scores(model, "0.weight", [(x, None)], "output") == [1.0, 0.0, 1.0]
    assert _scores(model, "0.weight", [(x, None)]) == [0.0, 0.0, 1.0]


def test_linear_on_sequences_is_ranked_per_feature():
    model = nn.Sequential(_set(nn.Linear(2, 3, bias=False), [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]])  # [N=1, L=3, F=2]: feature 1 is zero everywhere
    assert _scores(model, "0.weight", [(x, None)]) == [1.0, 0.0, 0.0]


class ChannelsLastMLP(nn.Module):
    """A ConvNeXt-style block: conv, then linears on channels-last maps, the hidden layer through a ReLU."""

    def __init__(self, rows):
        super().__init__()
        self.conv = _set(nn.Conv2d(2, 2, 1, bias=False), [[1.0, 0.0], [0.0, 1.0]])
        self.pw1 = _set(nn.Linear(2, len(rows), bias=False), rows)
        self.act = nn.ReLU()
        self.pw2 = nn.Linear(len(rows), 2)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        y = self.pw2(self.act(self.pw1(self.conv(x).permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)
        return self.head(y.mean((2, 3)))


def test_channels_last_linear_ranks_each_hidden_channel_over_h_by_w():
    # hidden channels: ch1 (rank 2), -(ch0 + ch1) (rank 2, zero after the ReLU), ch0 (rank 1), ch0 + ch1 (rank 2)
    model = ChannelsLastMLP([[0.0, 1.0], [-1.0, -1.0], [1.0, 0.0], [1.0, 1.0]])
    x = torch.tensor([RANK1, RANK2]).unsqueeze(0)
    loader = [(x, torch.tensor([0]))]
    assert _scores(model, "pw1.weight", loader, "output") == [2.0, 2.0, 1.0, 2.0]
    assert _scores(model, "pw1.weight", loader) == [2.0, 0.0, 1.0, 2.0]
    kept = {p: select_channels(model, p, 0.5, example_input=x, loader=loader)["pw1"].tolist()
            for p in ("hrank", "hrank_output")}
    assert kept == {"hrank": [0, 3], "hrank_output": [0, 1]}


def test_channels_last_linear_with_one_row_maps_scores_each_channel():
    model = ChannelsLastMLP([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]]])  # H = 1: each channel's map is 1 x 3
    assert _scores(model, "pw1.weight", [(x, None)]) == [1.0, 0.0, 0.0]


class Residual(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.conv = _set(nn.Conv2d(1, 1, 1, bias=False), [w])
        self.bn = nn.BatchNorm2d(1, eps=0.0)  # eval mode, running stats 0 / 1: the identity
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


@pytest.mark.parametrize("w,after_relu", [(1.0, 1.0), (-1.0, 0.0)])
def test_activation_point_is_after_bn_and_the_residual_add(w, after_relu):
    x = torch.tensor([[1.0, -1.0], [-1.0, -1.0]]).reshape(1, 1, 2, 2)  # rank 2
    # w = 1: relu(x + x) = [[2, 0], [0, 0]] has rank 1; w = -1: relu(-x + x) = 0 has rank 0; the conv's output has rank 2
    assert _scores(Residual(w), "conv.weight", [(x, None)]) == [after_relu]
    assert _scores(Residual(w), "conv.weight", [(x, None)], "output") == [2.0]


def test_relu_changes_the_rank_and_the_default_follows_the_authors():
    model = nn.Sequential(_set(nn.Conv2d(1, 2, 1, bias=False), [1.0, -1.0]), nn.BatchNorm2d(2, eps=0.0), nn.ReLU())
    x = torch.tensor([[1.0, -1.0], [-1.0, -1.0]]).reshape(1, 1, 2, 2)  # x and -x have rank 2
    # relu(x) = [[1, 0], [0, 0]] (rank 1), relu(-x) = [[0, 1], [1, 1]] (rank 2)
    assert _scores(model, "0.weight", [(x, None)]) == [1.0, 2.0]
    assert _scores(model, "0.weight", [(x, None)], "output") == [2.0, 2.0]


def test_untraceable_models_are_ranked_at_the_producer_output():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = _set(nn.Conv2d(1, 2, 1, bias=False), [1.0, -1.0])

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(y) if y.sum() > 0 else y  # data-dependent control flow: fx cannot trace it

    x = torch.tensor([[1.0, -1.0], [-1.0, -1.0]]).reshape(1, 1, 2, 2)
    assert _scores(Dynamic(), "conv.weight", [(x, None)]) == [2.0, 2.0]


def test_training_only_branches_score_zero_and_the_rest_keeps_the_activation_point():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = _set(nn.Conv2d(1, 2, 1, bias=False), [1.0, -1.0])
            self.aux = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return (y, self.aux(y)) if self.training else y

    model = Aux()
    x = torch.tensor([[1.0, -1.0], [-1.0, -1.0]]).reshape(1, 1, 2, 2)
    params = {"conv.weight": model.conv.weight, "aux.weight": model.aux.weight}
    scores = CRITERIA["hrank"]().scores(model, params, loader=[(x, None)])
    assert scores["conv.weight"].tolist() == [1.0, 2.0] and scores["aux.weight"].tolist() == [0.0, 0.0, 0.0]
    assert model.training  # the model's mode is restored


def test_unknown_point_is_refused():
    with pytest.raises(ValueError, match="HRank point must be one of activation, output"):
        HRank("input")

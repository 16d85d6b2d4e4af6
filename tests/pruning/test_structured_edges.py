"""The six edges of issue #20: each once crashed a pruned model (or its file, or its export)."""
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nptm import load_pruned, save_pruned
from nptm.export.__main__ import main as export_main
from nptm.pruning.structured import channel_groups, prune_channels, read_pruned


def groups_by_name(model, x):
    return {g.name: g for g in channel_groups(model, x)}


class NormNet(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.a = nn.Conv2d(3, 8, 1)
        self.norm = nn.LayerNorm(8, elementwise_affine=False)
        self.w = nn.Parameter(torch.ones(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x).permute(0, 2, 3, 1)
        y = F.layer_norm(y, (8,), self.w) if self.functional else self.norm(y)
        return self.head(y.permute(0, 3, 1, 2))


@pytest.mark.parametrize("functional", [False, True])
def test_layer_norm_without_weights_or_with_a_literal_shape_keeps_the_group_whole(functional):
    model, x = NormNet(functional).eval(), torch.randn(2, 3, 5, 5)
    g = groups_by_name(model, x)["a"]
    assert not g.prunable and "normalized_shape" in g.reason
    pruned = prune_channels(model, "l1_filters", 0.5, example_input=x)
    assert pruned.a.out_channels == 8 and pruned(x).shape == (2, 4, 5, 5)


class LayerNormWithWeights(NormNet):
    def __init__(self):
        super().__init__(False)
        self.norm = nn.LayerNorm(8)


def test_layer_norm_with_weights_still_prunes():
    model, x = LayerNormWithWeights().eval(), torch.randn(2, 3, 5, 5)
    pruned = prune_channels(model, "l1_filters", 0.5, example_input=x)
    assert pruned.norm.normalized_shape == (4,) and pruned(x).shape == (2, 4, 5, 5)


class EllipsisNoneNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.a(x).permute(0, 2, 3, 1)[..., None]  # N H W C 1: channels stay on dim 3
        return self.head(y[..., 0].permute(0, 3, 1, 2))


def test_indexing_with_ellipsis_and_none_labels_the_right_dimension():
    model, x = EllipsisNoneNet().eval(), torch.randn(2, 3, 4, 4)
    g = groups_by_name(model, x)["a"]
    assert g.prunable, g.reason
    pruned = prune_channels(model, "l1_filters", 0.5, example_input=x)
    assert pruned.a.out_channels == 4 and pruned.head.in_channels == 4 and pruned(x).shape == (2, 2, 4, 4)


class TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b.weight = self.a.weight
        self.stem, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.a(s) + self.b(s.relu()))


def test_tied_weights_form_one_group_and_stay_tied():
    model, x = TiedNet().eval(), torch.randn(2, 3, 6, 6)
    groups = channel_groups(model, x)
    assert [g.producers for g in groups if "a" in g.producers] == [("a", "b")]
    pruned = prune_channels(model, "l1_filters", 0.5, example_input=x)
    assert pruned.a.weight is pruned.b.weight and pruned.a.weight.shape == (4, 4, 3, 3)
    assert pruned(x).shape == (2, 4, 6, 6)


class TiedUntracked(nn.Module):
    """``b`` reads the raw input, ``a`` a pruned stem: their shared weight's input dim cannot shrink."""

    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.a(self.stem(x)) + self.b(x)


def test_tied_weight_with_an_unpruned_input_keeps_that_group_whole():
    model, x = TiedUntracked().eval(), torch.randn(1, 3, 4, 4)
    g = groups_by_name(model, x)["stem"]
    assert not g.prunable and "shared" in g.reason


class Versioned(nn.Module):
    _version = 2

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.a(x))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") != 2:
            raise RuntimeError(f"Versioned at {prefix!r}: state dict version {local_metadata.get('version')}, need 2")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_save_pruned_keeps_module_versions(tmp_path):
    x = torch.randn(1, 3, 8, 8)
    pruned = prune_channels(Versioned(), "l1_filters", 0.5, example_input=x).eval()
    save_pruned(pruned, tmp_path / "v.pt")
    loaded = load_pruned(Versioned(), tmp_path / "v.pt", example_input=x).eval()
    assert torch.equal(loaded(x), pruned(x))


FACTORY = textwrap.dedent("""
    from torch import nn
    def big_input(num_classes):  # 32x32 is too small for it: three stride-2 7x7 convs without padding
        return nn.Sequential(nn.Conv2d(3, 8, 7, 2), nn.ReLU(), nn.Conv2d(8, 8, 7, 2), nn.ReLU(), nn.Conv2d(8, 8, 7, 2),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
""")


@pytest.fixture
def big_input_file(tmp_path, monkeypatch):
    (tmp_path / "edge_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    from edge_factory import big_input

    x = torch.randn(1, 3, 64, 64)
    pruned = prune_channels(big_input(5), "l1_filters", 0.5, example_input=x)
    save_pruned(pruned, tmp_path / "big.pt")
    return tmp_path / "big.pt"


def test_export_traces_at_the_given_input_size(big_input_file, tmp_path, capsys):
    argv = [str(big_input_file), "--model", "edge_factory:big_input", "--torch-export", str(tmp_path / "b.pt2")]
    assert export_main([*argv, "--input-size", "64"]) == 0
    assert export_main([*argv, "--force"]) == 2  # at 32x32 it cannot run: one line, no ShapeProp traceback
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not run through" in err and "Traceback" not in err


def test_truncated_file_names_the_file_and_the_cause(tmp_path, capsys):
    path = tmp_path / "cut.pt"
    save_pruned(prune_channels(Versioned(), "l1_filters", 0.5, example_input=torch.randn(1, 3, 8, 8)), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cannot read pruned-model file .*cut\.pt: not a PyTorch checkpoint: truncated or corrupt"):
        read_pruned(path)
    assert export_main([str(path), "--model", "resnet20", "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cut.pt" in err and "Errno" not in err

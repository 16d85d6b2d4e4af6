"""save_sparse / load_sparse: the same outputs after a round trip (weights_only loading) for every layer kind
listed, the choices kept, a loaded model saved again, tensors the program reads, one-line errors naming the
file for missing, truncated, corrupt and foreign files, and no code run from a file."""
import copy
import operator
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

import nptm
from nptm.pruning import prune_unstructured
from nptm.sparse import SparseConv2d, SparseFileError, SparseLinear, sparsify
from nptm.sparse.saving import FORMAT


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    prune_unstructured(model, "magnitude", 0.8, include_linear=True, per_layer=True)
    x = torch.randn(2, 3, 32, 32)
    sparse = sparsify(model, x, measure=False)
    path = tmp_path_factory.mktemp("sparse") / "m.pt"
    nptm.save_sparse(sparse, path)
    return sparse, path


def test_roundtrip_same_outputs(saved):
    sparse, path = saved
    loaded = nptm.load_sparse(path)
    assert sum(isinstance(m, SparseConv2d) for m in loaded.modules()) == sum(isinstance(m, SparseConv2d) for m in sparse.modules())
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for x in (torch.randn(1, 3, 32, 32, generator=gen), torch.randn(5, 3, 24, 40, generator=gen).contiguous(memory_format=torch.channels_last)):
            assert torch.equal(loaded(x), sparse(x))


def test_loaded_model_keeps_choices_and_saves_again(saved, tmp_path):
    sparse, path = saved
    loaded = nptm.load_sparse(path)
    assert loaded.sparse_layers == sparse.sparse_layers
    nptm.save_sparse(copy.deepcopy(loaded), tmp_path / "again.pt")
    again = nptm.load_sparse(tmp_path / "again.pt")
    assert again.sparse_layers == sparse.sparse_layers
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(again(x), sparse(x))


class Mixed(nn.Module):
    """Layers of kinds the format lists: CNN, depthwise, reflect-padded (stays dense), tokens, torchvision's
    stochastic_depth (an optional function), tuple output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2))
        self.dw, self.act = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.GELU()
        self.refl = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.pool, self.tok, self.ln, self.drop = nn.AdaptiveAvgPool2d((2, 2)), nn.Linear(8, 16), nn.LayerNorm(16), nn.Dropout(0.1)
        self.flat, self.fc, self.depth = nn.Flatten(), nn.Linear(64, 5), torchvision.ops.StochasticDepth(0.2, "row")

    def forward(self, x):
        y = self.stem(x)
        y = self.refl(y + self.act(self.dw(y)))
        t = self.pool(y).flatten(2).transpose(1, 2)
        t = self.drop(self.ln(self.tok(t)))
        t = self.depth(torch.softmax(t, dim=-1)) * t.shape[-1]
        return self.fc(self.flat(t)), t.mean(1)


def tiny_vit():
    vit = torchvision.models.VisionTransformer(image_size=12, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                                               num_classes=5)
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts it at zero
    return vit


@pytest.mark.parametrize("build", [Mixed, tiny_vit])
def test_roundtrip_of_every_layer_kind(tmp_path, build):
    torch.manual_seed(2)
    model = build().eval()
    prune_unstructured(model, "magnitude", 0.7, include_linear=True, per_layer=True)
    sparse = sparsify(model, torch.randn(1, 3, 12, 12), measure=False)
    nptm.save_sparse(sparse, tmp_path / "m.pt")
    loaded = nptm.load_sparse(tmp_path / "m.pt")
    kinds = {type(m).__name__ for m in loaded.modules()}
    assert kinds >= ({"SparseConv2d", "SparseLinear", "Conv2d", "LayerNorm", "GELU"} if build is Mixed else {"MultiheadAttention"})
    assert build is not Mixed or any(s.target == "torchvision.ops:stochastic_depth" for s in loaded._steps)
    with torch.inference_mode():
        for b in (1, 3):
            x = torch.randn(b, 3, 12, 12)
            want = model(x)
            for got, w in zip(*(o if isinstance(o, tuple) else (o,) for o in (loaded(x), want))):
                assert (got - w).abs().max() <= 1e-4 * w.abs().max()


def test_tensors_read_by_the_program(tmp_path):
    """A dense layer's weight read again stays that layer's; a sparse layer's buffer read by the program is
    saved as a copy (load keeps the compressed buffers out of the program's reach)."""
    torch.manual_seed(4)
    root = nn.Module()
    root.fc, root.out = SparseLinear(torch.randn(8, 8) * (torch.rand(8, 8) > 0.5), torch.randn(8)), nn.Linear(8, 3)
    g = fx.Graph()
    x = g.placeholder("x")
    h = g.call_module("fc", (x,))
    s = g.call_method("sum", (g.get_attr("fc.values"),))
    y = g.call_function(operator.add, (g.call_module("out", (h,)), g.call_function(F.linear, (h, g.get_attr("out.weight")))))
    g.output(g.call_function(operator.mul, (y, s)))
    gm = fx.GraphModule(root, g)
    nptm.save_sparse(gm, tmp_path / "t.pt")
    assert set(torch.load(tmp_path / "t.pt", weights_only=True)["attributes"]) == {"fc_values"}
    loaded = nptm.load_sparse(tmp_path / "t.pt")
    x = torch.randn(5, 8)
    with torch.inference_mode():
        assert torch.equal(loaded(x), gm(x))
        loaded.out.weight.zero_()
        assert torch.equal(loaded(x), loaded.out.bias.expand(5, 3) * gm.fc.values.sum())  # both reads see the zeros


class MyLinear(nn.Linear):
    pass


@pytest.mark.parametrize("layer, refusal", [
    (nn.RNN(4, 4), "RNN is not in nptm.sparse.saving.MODULE_CLASSES"),
    (MyLinear(4, 4), "MyLinear is not in"),  # a subclass's forward may differ
    (nn.Conv2d(4, 4, 1), "cannot save layer faithfully"),  # an attribute its constructor does not set
])
def test_save_refuses_what_load_could_not_rebuild(tmp_path, layer, refusal):
    root = nn.Module()
    root.layer = layer
    if isinstance(layer, nn.Conv2d):
        layer.output_padding = (1, 1)
    g = fx.Graph()
    g.output(g.call_module("layer", (g.placeholder("x"),)))
    with pytest.raises(ValueError, match=refusal) as err:
        nptm.save_sparse(fx.GraphModule(root, g), tmp_path / "r.pt")
    assert "\n" not in str(err.value) and not (tmp_path / "r.pt").exists()


def test_loads_with_weights_only(saved):
    payload = torch.load(saved[1], weights_only=True)
    assert payload["format"] == FORMAT


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "missing"])
def test_bad_files_one_line_errors(saved, tmp_path, damage):
    path = tmp_path / "bad.pt"
    data = saved[1].read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 10)
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(SparseFileError) as err:
        nptm.load_sparse(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _tampered(saved, tmp_path, edit):
    payload = torch.load(saved[1], weights_only=True)
    edit(payload)
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("edit", [
    lambda p: p["steps"][1].update(op="call_function", target="torch:load"),
    lambda p: p["steps"][1].update(op="call_function", target="os:system"),
    lambda p: p["steps"][1].update(op="call_method", target="__reduce__"),
    lambda p: next(iter(p["modules"].values())).update({"class": "subprocess:Popen"}),
])
def test_files_cannot_name_arbitrary_code(saved, tmp_path, edit):
    path = _tampered(saved, tmp_path, edit)
    with pytest.raises(SparseFileError, match="not allowed"):
        nptm.load_sparse(path)


def test_unpicklable_globals_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": FORMAT, "nodes": Evil()}, f, protocol=2)
    with pytest.raises(SparseFileError, match="not a readable sparse-model file"):
        nptm.load_sparse(path)

"""nptm.sparsify: the same function as the dense masked model (within 1e-4 of its largest output) on
torchvision's ResNets and MobileNetV2 and on a user's model, at several batch sizes and memory formats,
with masks applied or given; BatchNorm folded and epilogues fused where the graph allows."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import nptm
from nptm.models import build_model
from nptm.pruning import Masks, prune_unstructured
from nptm.sparse import MARGIN, Latency, SparseConv2d, SparseLinear, deployable, measure_latency, sparsify
from nptm.sparse import latency as latency_module

TOL = 1e-4


def assert_same_function(dense, sparse, inputs):
    with torch.inference_mode():
        for x in inputs:
            want, got = dense(x), sparse(x)
            assert got.shape == want.shape
            assert (got - want).abs().max() <= TOL * max(want.abs().max().item(), 1e-30), type(dense).__name__


def batches(size=32):
    """Batch 3, batch 1, batch 64 (smaller images), channels_last."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, size, size, generator=gen)
    return [x, x[:1], torch.randn(64, 3, 8, 8, generator=gen), x.contiguous(memory_format=torch.channels_last)]


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics, so that folding them is tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.1, generator=gen)
    return model


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_torchvision_every_layer_sparse(name):
    torch.manual_seed(0)
    model = randomize_bn(getattr(torchvision.models, name)().eval())
    prune_unstructured(model, "magnitude", 0.8, include_linear=True, per_layer=True)
    sparse = sparsify(model, batches(16)[0], measure=False)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sum(isinstance(m, (SparseConv2d, SparseLinear)) for m in sparse.modules()) == len(convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sparse.modules())  # all folded
    fused = [m for m in sparse.modules() if isinstance(m, SparseConv2d) and m.clamp_min is not None]
    assert len(fused) > len(convs) // 2  # ReLU / ReLU6 fused
    assert_same_function(model, sparse, batches(16))


def test_resnet_residual_add_and_relu_fused():
    model = randomize_bn(torchvision.models.resnet18().eval())
    sparse = sparsify(model, batches()[0], measure=False)
    code = sparse.code
    assert "relu" not in code and " + " not in code and "iadd" not in code  # every add and ReLU went into a conv
    assert_same_function(model, sparse, batches()[:2])


def test_measured_choice_is_recorded_and_exact():
    torch.manual_seed(1)
    model = randomize_bn(torchvision.models.resnet18().eval())
    prune_unstructured(model, "magnitude", 0.9, include_linear=True)
    sparse = sparsify(model, batches()[0], batch_sizes=(2,), rounds=3)
    layers = sparse.sparse_layers
    assert len(layers) == 21 and all(c.reason for c in layers)
    for c in layers:
        assert c.sparse == isinstance(sparse.get_submodule(c.name), (SparseConv2d, SparseLinear))
        if c.dense_ms:
            assert set(c.dense_ms) == {2, 3} and c.sparse == all(c.dense_ms[b] >= MARGIN * c.sparse_ms[b] for b in c.dense_ms)
    assert_same_function(model, sparse, batches())


class UserNet(nn.Module):
    """Convs of every kind the op runs (grouped, depthwise, dilated, strided, rectangular), a conv called twice,
    functional ReLU / clamp / residual adds, Linear + BatchNorm1d, and a view."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.grouped = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4)
        self.depthwise = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.rect = nn.Conv2d(16, 24, (1, 3), padding=(0, 1), padding_mode="zeros")
        self.shared = nn.Conv2d(24, 24, 1)
        self.reflect = nn.Conv2d(24, 24, 3, padding=1, padding_mode="reflect")
        self.fc = nn.Linear(24, 32)
        self.bn1d = nn.BatchNorm1d(32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.grouped(x) + x)
        x = torch.clamp(self.bn(self.depthwise(x)), 0.0, 6.0)
        x = self.rect(x)
        x = torch.add(self.shared(x), self.shared(x).relu())
        x = self.reflect(x).mean((2, 3))
        return self.head(F.relu(self.bn1d(self.fc(x)))).view(x.shape[0], -1)


def test_user_model_masks_given():
    torch.manual_seed(2)
    model = randomize_bn(UserNet().eval())
    masks = prune_unstructured(copy.deepcopy(model), "magnitude", 0.7, include_linear=True)
    dense = copy.deepcopy(model)
    masks.apply(dense)
    for given in (masks, masks.state_dict()):  # a Masks, or a plain dict
        sparse = sparsify(model, batches()[0], given, measure=False)
        assert_same_function(dense, sparse, batches())
    assert model.stem[0].weight.count_nonzero() == model.stem[0].weight.numel()  # the user's model is untouched
    kinds = {type(sparse.get_submodule(c.name)).__name__ for c in sparse.sparse_layers}
    assert kinds == {"SparseConv2d", "SparseLinear", "Conv2d"}  # the reflect-padded conv stays dense


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) if y.sum() > 0 else -self.b(y)  # data-dependent: torch.fx cannot trace it


def test_untraceable_model_gets_per_layer_replacement(tmp_path):
    torch.manual_seed(3)
    model = Untraceable().eval()
    prune_unstructured(model, "magnitude", 0.6)
    sparse = sparsify(model, batches()[0], measure=False)
    assert isinstance(sparse.a, SparseConv2d) and isinstance(sparse.b, SparseConv2d)
    assert_same_function(model, sparse, batches())
    with pytest.raises(ValueError, match="not a traced graph"):
        nptm.save_sparse(sparse, tmp_path / "u.pt")


def test_all_zero_and_dense_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 32 * 32, 4)).eval()
    with torch.no_grad():
        model[2].weight.zero_()
    sparse = sparsify(model, batches()[0], batch_sizes=())
    by_name = {c.name: c for c in sparse.sparse_layers}
    assert by_name["2"].sparse and by_name["2"].reason == "no nonzero weight"
    assert not by_name["0"].sparse and "density 1.00" in by_name["0"].reason
    assert_same_function(model, sparse, batches()[:2])


def test_refuses_models_off_cpu():
    model = nn.Conv2d(3, 3, 1, device="meta")
    with pytest.raises(ValueError, match="on meta"):
        sparsify(model, batches()[0])


def test_measure_latency_interleaved():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    one = measure_latency(model, batches()[0], repeats=5, threads=1)
    assert one["repeats"] == 5 and one["threads"] == 1 and one["batch"] == 3
    assert one["min_ms"] <= one["q1_ms"] <= one["median_ms"] <= one["q3_ms"] <= one["max_ms"]
    both = measure_latency({"a": model, "b": model}, batches()[0], repeats=3)
    assert set(both) == {"a", "b"} and both["a"]["repeats"] == 3


def test_deployable(monkeypatch):
    model = randomize_bn(build_model("digits_net", 10, in_channels=1).eval())
    x = torch.randn(16, 1, 8, 8)
    assert deployable(model, None, x) is model  # nothing pruned: nothing sparse
    masks = Masks({n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n == "classifier.0.weight"})
    # the whole models time alike (one empty linear layer): the sparsified one measured faster, so that it is the one
    # checked (the timing rule itself: test_choices.test_deploy_keeps_the_dense_model_where_the_sparse_one_is_slower)
    fake = lambda models, inputs, **_: {k: Latency.of([(1.0 if k == "sparse" else 2.0) / 1e3] * 3, 1, 1, 16) for k in models}  # noqa: E731
    monkeypatch.setattr(latency_module, "measure_latency", fake)
    out = deployable(model, masks, x)
    assert out is not model and isinstance(out.get_submodule("classifier.0"), SparseLinear)  # an empty layer goes sparse
    dense = copy.deepcopy(model)
    masks.apply(dense)
    assert_same_function(dense, out, [x])

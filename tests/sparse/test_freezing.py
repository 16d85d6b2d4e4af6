"""freeze: the sparsified model (or a loaded one) traced and frozen computes what it computes, at the example's
batch size and others, in NCHW and channels_last, with every kind of layer sparsify makes (sparse conv and linear,
oneDNN's dense conv with a residual, the depthwise kernel, channels_last max-pool); a module the trace cannot
follow is refused with one ValueError."""
import pytest
import torch
from torch import nn

from nptm.sparse import DenseConv2d, SparseConv2d, SparseLinear, freeze, load_sparse, save_sparse, sparsify
from nptm.sparse.dense import onednn_available
from nptm.sparse.freezing import TOLERANCE


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6())
        self.pw = nn.Conv2d(16, 16, 1)
        self.dense = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = torch.relu(self.pw(self.dw(x)) + x)
        x = torch.relu(self.dense(x) + x)
        return self.head(x.mean((2, 3)))


def _model():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        for m in (model.pw, model.head):
            m.weight.mul_(torch.rand(m.weight.shape) < 0.2)
        model.stem[1].running_mean.uniform_(-1, 1)
        model.stem[1].running_var.uniform_(0.5, 2)
    return model


def _close(got, want):
    return got.shape == want.shape and float((got - want).abs().max()) <= TOLERANCE * max(1.0, float(want.abs().max()))


CHOICES = {"stem.0": False, "dw.0": False, "pw": True, "dense": False, "head": True}


@pytest.mark.parametrize("channels_last", [False, True])
def test_frozen_equals_eager_at_every_batch_and_after_loading(tmp_path, channels_last):
    model = _model()
    x = torch.randn(2, 3, 20, 20)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sparse = sparsify(model, x, choices=CHOICES)
    kinds = {type(m) for m in sparse.modules()}
    assert {SparseConv2d, SparseLinear} <= kinds and (DenseConv2d in kinds) == onednn_available()
    save_sparse(sparse, tmp_path / "m.nptm")
    for module in (sparse, load_sparse(tmp_path / "m.nptm")):
        frozen = freeze(module, x)
        assert isinstance(frozen, torch.jit.ScriptModule)
        with torch.inference_mode():
            for b in (1, 2, 5):
                xb = torch.randn(b, 3, 20, 20)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                want = model(xb)
                assert _close(frozen(xb), want) and _close(module(xb), want)


def test_nan_and_inf_pass_through_as_in_the_module():
    sparse = sparsify(_model(), torch.randn(1, 3, 12, 12), choices=CHOICES)
    x = torch.randn(1, 3, 12, 12)
    frozen = freeze(sparse, x)
    x[0, 0, 3, 3], x[0, 1, 5, 5] = float("nan"), float("inf")
    with torch.inference_mode():
        got, want = frozen(x), sparse(x)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())


class ByBatch(nn.Module):
    def forward(self, x):
        return x * 2 if x.shape[0] == 1 else x * 3


class Untraceable(nn.Module):
    def forward(self, x):
        return {"y": x, "n": len(x)}


def test_refusals():
    with pytest.raises(ValueError, match="computes something else at batch 2"):
        freeze(ByBatch().eval(), torch.randn(1, 4))
    with pytest.raises(ValueError, match="cannot trace Untraceable: "):
        freeze(Untraceable().eval(), torch.randn(1, 4))
    with pytest.raises(ValueError, match="training mode"):
        freeze(nn.Linear(3, 3), torch.randn(1, 3))


def test_outputs_compare_with_the_tolerance_on_finite_values_and_exactly_elsewhere():
    from nptm.sparse.tracing import same_outputs

    y = torch.tensor([1.0, 100.0, float("inf"), float("nan"), -float("inf")])
    near, far = y.clone(), y.clone()
    near[1] += 100.0 * TOLERANCE / 2
    far[1] += 100.0 * TOLERANCE * 2
    assert same_outputs(near, y, TOLERANCE) and not same_outputs(far, y, TOLERANCE) and not same_outputs(near, y)
    flipped, moved = y.clone(), y.clone()
    flipped[2] = -float("inf")
    moved[0] = float("nan")
    assert not same_outputs(flipped, y, TOLERANCE) and not same_outputs(moved, y, TOLERANCE)
    assert same_outputs((y, {"n": 3}), (y.clone(), {"n": 3})) and not same_outputs((y, 3), (y, 4))

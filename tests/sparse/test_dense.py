"""DenseConv2d (oneDNN called directly, residual and clamp fused) equals torch's conv followed by the same ops:
within 1e-5 of the largest output (oneDNN's blocked kernels sum in another order than torch's NCHW 1x1 path),
in the input's memory format, NaN kept by the clamp; sparsify runs the layers that stay dense through it and
still computes the model's function, also after save_sparse / load_sparse."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx, nn

import nptm
from nptm.sparse import DenseConv2d, sparsify
from nptm.sparse.dense import onednn_available

TOL = 1e-5  # of the largest output


def close(got, want, tol=TOL):
    return got.shape == want.shape and bool((got - want).abs().max() <= tol * max(1.0, float(want.abs().max())))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_dense_conv_equals_torch_conv_and_epilogue(data):
    d = data.draw
    groups = d(st.sampled_from([1, 2, 3, 0]))  # 0: depthwise
    if groups == 0:
        cin = groups = d(st.integers(1, 12))
        cout = cin * d(st.integers(1, 2))
    else:
        cin, cout = groups * d(st.integers(1, 4)), groups * d(st.integers(1, 3))
    k, s, dil = (d(st.integers(1, 4)), d(st.integers(1, 3))), (d(st.integers(1, 3)), d(st.integers(1, 2))), (d(st.integers(1, 2)),) * 2
    pad = (d(st.integers(0, 2)), d(st.integers(0, 2)))
    batch, h, w = d(st.sampled_from([1, 2, 5])), d(st.integers(8, 14)), d(st.integers(8, 14))
    bias, residual, clamp = d(st.booleans()), d(st.booleans()), d(st.sampled_from([None, (0.0, None), (0.0, 6.0), (-0.5, 0.5), (None, 1.0)]))
    gen = torch.Generator().manual_seed(d(st.integers(0, 999)))
    conv = nn.Conv2d(cin, cout, k, s, pad, dil, groups, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    layer = DenseConv2d(conv.weight, conv.bias, s, pad, dil, groups)
    layer.clamp_min, layer.clamp_max = clamp or (None, None)
    x = torch.randn(batch, cin, h, w, generator=gen)
    with torch.no_grad():
        want = conv(x)
        r = torch.randn(want.shape, generator=gen) if residual else None
        want = want + r if residual else want
        want = want.clamp(*clamp) if clamp else want
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            got, eager = layer(inp, r), conv(inp)
            assert close(got, want), (got - want).abs().max()
            for fmt in (torch.contiguous_format, torch.channels_last):  # the memory format of nn.Conv2d's output
                assert got.is_contiguous(memory_format=fmt) == eager.is_contiguous(memory_format=fmt)
        wide = DenseConv2d(conv.weight.double(), None if conv.bias is None else conv.bias.double(), s, pad, dil, groups)
        wide.clamp_min, wide.clamp_max = layer.clamp_min, layer.clamp_max
        assert close(wide(x.double(), None if r is None else r.double()).float(), want)  # other dtypes: F.conv2d


def test_nan_kept_weight_changes_seen_and_a_wrong_residual_refused():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    layer = DenseConv2d(conv.weight.detach().clone(), conv.bias, padding=1)
    layer.clamp_min = 0.0  # a fused ReLU: oneDNN's own would turn NaN into 0, torch.relu keeps it
    x = torch.randn(2, 4, 7, 7)
    x[0, 0, 3, 3] = float("nan")
    with torch.no_grad():
        want = F.relu(conv(x))
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            got = layer(inp)
            assert torch.equal(got.isnan(), want.isnan()) and close(got.nan_to_num(), want.nan_to_num())
        xc = torch.randn(1, 4, 7, 7).contiguous(memory_format=torch.channels_last)
        layer(xc)  # packs the weight for channels_last
        layer.weight.mul_(-1)  # an in-place change: the packed copy is made again
        assert close(layer(xc), F.relu(F.conv2d(xc, -conv.weight, conv.bias, padding=1)))
        with pytest.raises(ValueError, match=r"residual of shape \(1, 6, 7, 7\) for an output of shape \(2, 6, 7, 7\)"):
            layer(torch.randn(2, 4, 7, 7), torch.randn(1, 6, 7, 7))


class Inverted(nn.Module):  # MobileNetV2's block: 1x1 expand, depthwise 3x3, 1x1 project, residual
    def __init__(self, c):
        super().__init__()
        self.expand, self.dw, self.project = nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, 4 * c, 3, padding=1, groups=4 * c), nn.Conv2d(4 * c, c, 1)

    def forward(self, x):
        return x + self.project(F.relu6(self.dw(F.relu6(self.expand(x)))))


def small_models():
    mobile = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(), Inverted(8), Inverted(8),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    resnet = torchvision.models.resnet18(num_classes=5)
    resnet.layer3, resnet.layer4, resnet.fc = nn.Identity(), nn.Identity(), nn.Linear(128, 5)
    return {"mobile": mobile, "resnet": resnet}


@pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch build: DenseConv2d is not used")
@pytest.mark.parametrize("name", ["mobile", "resnet"])
def test_sparsify_runs_dense_layers_through_onednn(name, tmp_path):
    torch.manual_seed(0)
    model = small_models()[name].eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    choices = {n: i % 3 == 0 for i, n in enumerate(convs)}  # every third conv sparse, the others dense
    choices.update({n: False for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1})
    made = sparsify(model, torch.randn(1, 3, 16, 16), choices=choices).sparse_layers
    for c in made:
        c.dense_engine = "" if c.sparse else "onednn"  # untimed, the depthwise convs default to DenseConv2d too
    fast = sparsify(model, torch.randn(1, 3, 16, 16), choices=made)
    kinds = {c.name: type(fast.get_submodule(c.name)).__name__ for c in fast.sparse_layers}
    assert {kinds[n] for n in convs if not choices[n]} == {"DenseConv2d"}
    mods = dict(fast.named_modules())
    fused = [n for n in fast.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], DenseConv2d)
             and (len(n.args) == 2 or mods[n.target].clamp_min is not None)]
    assert len(fused) >= 3  # ReLU / ReLU6 and residual adds went into the dense calls
    nptm.save_sparse(fast, tmp_path / "m.pt")
    loaded = nptm.load_sparse(tmp_path / "m.pt")
    assert sum(isinstance(m, DenseConv2d) for m in loaded.modules()) == sum(isinstance(m, DenseConv2d) for m in fast.modules())
    with torch.inference_mode():
        for x in (torch.randn(1, 3, 16, 16), torch.randn(3, 3, 16, 16), torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)):
            want = model(x)
            for got in (fast(x), loaded(x)):
                assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_measured_choice_compares_sparse_with_the_faster_dense_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 128, 1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1, groups=128)).eval()
    fast = sparsify(model, torch.randn(1, 64, 14, 14), batch_sizes=(), rounds=3, cache=False)
    for c in fast.sparse_layers:  # dense weights: both stay dense, each run by the engine measured faster
        assert not c.sparse and c.dense_engine in (("onednn", "torch") if onednn_available() else ("torch",))
        assert isinstance(fast.get_submodule(c.name), DenseConv2d) == (c.dense_engine == "onednn")
    assert isinstance(fast, fx.GraphModule)


def test_depthwise_runs_nptm_kernel_on_nchw_inputs():
    """A depthwise DenseConv2d runs nptm.ops.depthwise_conv2d on an NCHW (or other non-channels_last) input, oneDNN's
    prepacked weight on a channels_last one; untimed choices give depthwise convs DenseConv2d."""
    conv = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
    layer = DenseConv2d(conv.weight, conv.bias, 2, 1, 1, 8)
    layer.clamp_min, layer.clamp_max = 0.0, 6.0
    x = torch.randn(2, 8, 11, 11)
    for inp, nptm_kernel in ((x, True), (x.transpose(2, 3).contiguous().transpose(2, 3), True),
                             (x.contiguous(memory_format=torch.channels_last), False)):
        with torch.no_grad():
            with torch.profiler.profile() as prof:
                got = layer(inp)
            want = F.relu6(conv(inp))
        ran = {e.key for e in prof.key_averages()}
        assert ("nptm::depthwise_conv2d" in ran) == nptm_kernel, ran
        assert close(got, want)
    assert nptm.sparse.choose.default_engine(conv) == "onednn" and nptm.sparse.choose.default_engine(nn.Conv2d(8, 8, 3, groups=4)) == "torch"

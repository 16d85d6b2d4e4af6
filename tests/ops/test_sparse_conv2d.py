"""sparse_conv2d (CPU: AVX-512, AVX2 and portable variants) against nptm.ops.reference and the dense conv.

Agreement is within 1e-4 of the largest output magnitude (the kernel sums in another order than the float64
reference). Non-finite activations: products are formed with stored weights only, so NaN/Inf positions
must match the reference exactly, and differ from the dense conv's only through pruned weights."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nptm import ops
from nptm.ops import reference

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOL = 1e-4


def _variants():
    import os

    saved = {k: os.environ.pop(k, None) for k in ("NPTM_DISABLE_AVX2", "NPTM_DISABLE_AVX512")}
    best = ops.sparse_conv2d_isa()
    os.environ.update({k: v for k, v in saved.items() if v is not None})
    return ["portable"] + (["avx2"] if best in ("avx2", "avx512") else []) + (["avx512"] if best == "avx512" else [])


VARIANTS = _variants()  # every variant this CPU runs


@pytest.fixture(params=VARIANTS)
def isa(request, monkeypatch):
    """Force one variant through the environment (read on every call) and check that it is the one running."""
    monkeypatch.delenv("NPTM_DISABLE_AVX2", raising=False)
    monkeypatch.delenv("NPTM_DISABLE_AVX512", raising=False)
    if request.param == "portable":
        monkeypatch.setenv("NPTM_DISABLE_AVX2", "1")
    elif request.param == "avx2":
        monkeypatch.setenv("NPTM_DISABLE_AVX512", "1")
    assert ops.sparse_conv2d_isa() == request.param
    return request.param


def sparse_weight(shape, density, gen):
    w = torch.randn(shape, generator=gen)
    return w * (torch.rand(shape, generator=gen) < density)


def run_both(x, w, bias=None, residual=None, stride=1, padding=0, dilation=1, groups=1, clamp=(None, None)):
    packed = ops.compress_weight(w)
    got = ops.sparse_conv2d(x, *packed, w.shape, bias, residual=residual, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, clamp_min=clamp[0], clamp_max=clamp[1])
    want = reference.sparse_conv2d(x, *packed, w.shape, bias, residual, stride, padding, dilation, groups, *clamp)
    return got, want


def assert_close(got, want):
    assert got.shape == want.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got.isnan(), want.isnan())
    finite = want.isfinite()
    assert torch.equal(got[~finite & ~want.isnan()], want[~finite & ~want.isnan()])  # the infinities, with their signs
    scale = want[finite].abs().max().item() if finite.any() else 0.0
    assert (got[finite] - want[finite]).abs().max().item() <= TOL * max(scale, 1e-30) if finite.any() else True


@st.composite
def convs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 6)), groups * draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    n = draw(st.sampled_from([1, 2, 3, 64]))
    big = 12 if n > 3 else 40
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), big))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), big))
    return dict(n=n, cin=cin, cout=cout, k=(kh, kw), stride=stride, padding=padding, dilation=dilation, groups=groups, hw=(h, w),
                density=draw(st.sampled_from([0.0, 0.05, 0.3, 1.0])), bias=draw(st.booleans()), residual=draw(st.booleans()),
                clamp=draw(st.sampled_from([(None, None), (0.0, None), (0.0, 6.0), (-0.5, 0.5)])),
                channels_last=draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)))


def build(c):
    gen = torch.Generator().manual_seed(c["seed"])
    x = torch.randn(c["n"], c["cin"], *c["hw"], generator=gen)
    if c["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    w = sparse_weight((c["cout"], c["cin"] // c["groups"], *c["k"]), c["density"], gen)
    b = torch.randn(c["cout"], generator=gen) if c["bias"] else None
    out = F.conv2d(x, w, b, c["stride"], c["padding"], c["dilation"], c["groups"])
    r = torch.randn(out.shape, generator=gen) if c["residual"] else None
    return x, w, b, r


@given(c=convs())
@SETTINGS
def test_matches_reference_and_dense_conv(isa, c):
    x, w, b, r = build(c)
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    got, want = run_both(x, w, b, r, clamp=c["clamp"], **kw)
    assert_close(got, want)
    dense = F.conv2d(x, w, b, **kw) + (0 if r is None else r)
    if c["clamp"] != (None, None):
        dense = dense.clamp(*c["clamp"])
    assert_close(got, dense)


@pytest.mark.parametrize("case", ["all_zero", "dense", "zero_channels", "one_weight"])
def test_weight_patterns(isa, case):
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 8, 11, 13, generator=gen), torch.randn(6, 8, 3, 3, generator=gen)
    if case == "all_zero":
        w.zero_()
    elif case == "zero_channels":
        w[::2] = 0
    elif case == "one_weight":
        keep = w[4, 5, 2, 0].clone()
        w.zero_()
        w[4, 5, 2, 0] = keep
    b = torch.randn(6, generator=gen)
    got, want = run_both(x, w, b, padding=1, clamp=(0.0, None))
    assert_close(got, want)
    assert_close(got, F.relu(F.conv2d(x, w, b, padding=1)))
    if case in ("all_zero", "zero_channels"):
        assert torch.equal(got[:, ::2], F.relu(b[::2]).view(1, 3, 1, 1).expand(2, 3, 11, 13))


@pytest.mark.parametrize("bias,clamp", [(False, (None, None)), (True, (-0.5, 0.5))])
def test_all_zero_weight_never_reads_the_input(bias, clamp):
    """Nothing stored: clamp(bias + residual) at any stride, whatever the input holds (NaN included)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.full((2, 4, 9, 7), float("nan"))
    w = torch.zeros(6, 2, 3, 3)
    b = torch.randn(6, generator=gen) if bias else None
    r = torch.randn(2, 6, 5, 4, generator=gen)
    r[1, 2, 0, 0] = float("nan")
    got, want = run_both(x, w, b, r, stride=2, padding=1, groups=2, clamp=clamp)
    assert_close(got, want)
    assert torch.equal(got.isnan(), r.isnan())
    dense = (r if b is None else r + b.view(1, -1, 1, 1))
    torch.testing.assert_close(got, dense if clamp == (None, None) else dense.clamp(*clamp), rtol=0, atol=0, equal_nan=True)


def test_resnet_layer_shapes(isa):
    """The shapes ResNet-50 runs (wide and narrow, 56 to 7 pixels, strided 1x1 and 3x3), at 10% density."""
    gen = torch.Generator().manual_seed(2)
    for cin, cout, hw, k, s in [(64, 256, 56, 1, 1), (128, 128, 28, 3, 2), (1024, 256, 14, 1, 1), (512, 1024, 14, 1, 2),
                                (512, 512, 7, 3, 1), (3, 64, 40, 7, 2)]:
        x = torch.randn(1, cin, hw, hw, generator=gen)
        w = sparse_weight((cout, cin, k, k), 0.1, gen)
        got, want = run_both(x, w, torch.randn(cout, generator=gen), stride=s, padding=k // 2)
        assert_close(got, want)


def test_nonfinite_activations(isa):
    """NaN/Inf reach the outputs through stored weights exactly as IEEE arithmetic has it, never through pruned ones."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, 9, generator=gen)
    x[0, 1, 4, 4], x[1, 2, 0, 3], x[1, 3, 8, 8] = float("nan"), float("inf"), float("-inf")
    x[1, 0, 2, 2], x[1, 0, 2, 3] = float("inf"), float("-inf")  # inf - inf = NaN where both meet stored weights
    w = sparse_weight((5, 4, 3, 3), 0.4, gen)
    w[0, 1], w[1, 1] = 0, 1  # channel 0 never sees the NaN, channel 1 sees it through all 9 taps
    got, want = run_both(x, w, torch.randn(5, generator=gen), padding=1)
    assert_close(got, want)
    assert not got[0, 0].isnan().any() and got[0, 1, 3:6, 3:6].isnan().all()
    dense = F.conv2d(x, w, padding=1)
    assert dense[0, 0].isnan().any()  # the dense conv multiplies the NaN by channel 0's zeros


def test_nonfinite_clamp_propagates_nan():
    x = torch.full((1, 1, 2, 2), float("nan"))
    got = ops.sparse_conv2d(x, *ops.compress_weight(torch.ones(1, 1, 1, 1)), (1, 1, 1, 1), clamp_min=0.0, clamp_max=6.0)
    assert got.isnan().all()


@given(n=st.sampled_from([1, 2, 5, 64]), fin=st.integers(1, 40), fout=st.integers(1, 40), density=st.sampled_from([0.0, 0.2, 1.0]),
       lead=st.sampled_from([(), (3,)]), seed=st.integers(0, 2**31 - 1))
@SETTINGS
def test_sparse_linear(isa, n, fin, fout, density, lead, seed):
    gen = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(*lead, n, fin, generator=gen), sparse_weight((fout, fin), density, gen), torch.randn(fout, generator=gen)
    got = ops.sparse_linear(x, *ops.compress_weight(w), w.shape, b, clamp_min=0.0)
    assert got.shape == (*lead, n, fout)
    want = F.relu(F.linear(x, w, b))
    assert (got - want).abs().max() <= TOL * max(want.abs().max().item(), 1e-30)


def test_compress_weight_layout():
    w = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 4.0]]], [[[0.0] * 2] * 2] * 2], dtype=torch.float32)
    values, taps, row_ptr = ops.compress_weight(w)
    assert values.tolist() == [2.0, 3.0, 4.0] and taps.tolist() == [1, 4, 7] and row_ptr.tolist() == [0, 3, 3]
    assert taps.dtype == torch.int32 and row_ptr.dtype == torch.int64


def test_fake_kernel_and_schema():
    x, w = torch.randn(2, 4, 10, 10), sparse_weight((6, 2, 3, 3), 0.5, torch.Generator().manual_seed(4))
    args = (x, *ops.compress_weight(w), list(w.shape), torch.randn(6), None, [2, 2], [1, 1], [1, 1], 2, 0.0, None)
    torch.library.opcheck(torch.ops.nptm.sparse_conv2d.default, args)
    packed = ops.compress_weight(w)
    with torch._subclasses.fake_tensor.FakeTensorMode():
        out = torch.ops.nptm.sparse_conv2d(torch.empty(2, 4, 10, 10), *[torch.empty(t.shape, dtype=t.dtype) for t in packed], list(w.shape), None,
                                           None, [2, 2], [1, 1], [1, 1], 2)
    assert out.shape == (2, 6, 5, 5)


def test_bad_input_one_line_errors():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(3, 4, 1, 1)
    v, t, r = ops.compress_weight(w)
    with pytest.raises(ValueError, match="float32"):
        ops.sparse_conv2d(x.double(), v, t, r, w.shape)
    with pytest.raises(ValueError, match="channels"):
        ops.sparse_conv2d(torch.randn(1, 5, 5, 5), v, t, r, w.shape)
    with pytest.raises(ValueError, match="row_ptr"):
        ops.sparse_conv2d(x, v, t, torch.tensor([0, 5, 2, 12]), w.shape)
    with pytest.raises(IndexError, match="tap"):
        ops.sparse_conv2d(x, v, torch.full_like(t, 4), r, w.shape)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        ops.sparse_conv2d(x, *ops.compress_weight(torch.randn(3, 4, 7, 7)), (3, 4, 7, 7))
    with pytest.raises(ValueError, match="residual"):
        ops.sparse_conv2d(x, v, t, r, w.shape, residual=torch.randn(1, 3, 4, 4))

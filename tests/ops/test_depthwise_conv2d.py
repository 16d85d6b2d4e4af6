"""depthwise_conv2d (CPU: AVX-512, AVX2 and portable variants) against the float64 convolution of the zero-padded
input (every product formed, as the kernel forms them) and against F.conv2d(groups=C).

Finite outputs agree within 1e-5 of the largest finite output; NaN and infinite positions (with their signs) match
the padded reference exactly. Zero padding is multiplied like any input, so an infinite weight makes the border
outputs it reaches NaN (0 x Inf)."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sparse_conv2d import isa  # noqa: F401  (the variant fixture)

from nptm import ops

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOL = 1e-5
# Every distinct depthwise conv of MobileNetV2 at 224 px (channels, input size, stride), 3x3, padding 1.
MOBILENET_V2 = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2), (384, 14, 1),
                (576, 14, 1), (576, 14, 2), (960, 7, 1)]


def reference(x, w, b=None, r=None, stride=1, padding=(0, 0), dilation=1, clamp=(None, None)):
    xp = F.pad(x.double(), (padding[1], padding[1], padding[0], padding[0]))
    y = F.conv2d(xp, w.double(), None if b is None else b.double(), stride, 0, dilation, x.shape[1])
    y = y if r is None else y + r.double()
    return y.clamp(*clamp) if clamp != (None, None) else y


def assert_close(got, want):
    assert got.shape == want.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got.isnan(), want.isnan())
    inf = want.isinf()
    assert torch.equal(got[inf], want[inf].float())
    finite = want.isfinite()
    if finite.any():
        scale = max(want[finite].abs().max().item(), 1e-30)
        assert (got[finite].double() - want[finite]).abs().max().item() <= TOL * scale


def layout(x, how):
    """The same values in another memory layout: channels_last, a strided slice of a wider tensor, H/W swapped."""
    if how == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if how == "sliced":
        wide = torch.zeros(x.shape[0], x.shape[1] + 1, x.shape[2], 2 * x.shape[3])
        wide[:, 1:, :, ::2] = x
        return wide[:, 1:, :, ::2]
    if how == "transposed":
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    return x


@st.composite
def convs(draw):
    square = draw(st.booleans())
    kh = draw(st.sampled_from([1, 3, 3, 5, 7]))
    kw = kh if square else draw(st.sampled_from([1, 3, 5, 7]))
    sh = draw(st.integers(1, 3))
    stride = (sh, sh) if square else (sh, draw(st.integers(1, 3)))
    dilation = (1, 1) if draw(st.booleans()) else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    big = draw(st.sampled_from([9, 20, 40, 112]))
    lo = (max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]))
    h, w = draw(st.integers(lo[0], max(lo[0], big))), draw(st.integers(lo[1], max(lo[1], big)))
    channels = draw(st.integers(1, 3 if big == 112 else 8))
    return dict(n=draw(st.integers(1, 3)), c=channels, k=(kh, kw), stride=stride, padding=padding, dilation=dilation, hw=(h, w),
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                clamp=draw(st.sampled_from([(None, None), (0.0, None), (0.0, 6.0), (-0.5, 0.5)])),
                layout=draw(st.sampled_from(["contiguous", "contiguous", "channels_last", "sliced", "transposed"])),
                seed=draw(st.integers(0, 2**31 - 1)))


@given(c=convs())
@SETTINGS
def test_matches_padded_reference_and_dense_conv(isa, c):  # noqa: F811
    gen = torch.Generator().manual_seed(c["seed"])
    x = torch.randn(c["n"], c["c"], *c["hw"], generator=gen)
    w = torch.randn(c["c"], 1, *c["k"], generator=gen)
    b = torch.randn(c["c"], generator=gen) if c["bias"] else None
    geometry = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    dense = F.conv2d(x, w, b, groups=c["c"], **geometry)
    r = torch.randn(dense.shape, generator=gen) if c["residual"] else None
    got = ops.depthwise_conv2d(layout(x, c["layout"]), w, b, residual=r, clamp_min=c["clamp"][0], clamp_max=c["clamp"][1], **geometry)
    assert_close(got, reference(x, w, b, r, clamp=c["clamp"], **geometry))
    dense = dense if r is None else dense + r
    assert_close(got, (dense.clamp(*c["clamp"]) if c["clamp"] != (None, None) else dense).double())


@pytest.mark.parametrize("k,d,shapes", [(3, 1, MOBILENET_V2), (5, 1, [(40, 56, 2), (40, 28, 1), (240, 28, 2), (480, 14, 1), (1152, 7, 1)]),
                                         (7, 1, [(96, 56, 1), (768, 7, 1)]), (3, 2, [(960, 14, 1), (160, 33, 1)])])
def test_network_layer_shapes(isa, k, d, shapes):  # noqa: F811
    """MobileNetV2's depthwise convs, MnasNet / EfficientNet's 5x5 ones, ConvNeXt's 7x7 ones and the dilated 3x3 ones
    of DeepLab's MobileNet backbones ("same" padding), with bias, a residual and ReLU6."""
    gen = torch.Generator().manual_seed(k)
    for c, hw, s in shapes:
        x, w, b = torch.randn(1, c, hw, hw, generator=gen), torch.randn(c, 1, k, k, generator=gen), torch.randn(c, generator=gen)
        r = torch.randn(1, c, (hw - 1) // s + 1, (hw - 1) // s + 1, generator=gen)
        p = d * (k // 2)
        got = ops.depthwise_conv2d(x, w, b, residual=r, stride=s, padding=p, dilation=d, clamp_min=0.0, clamp_max=6.0)
        assert_close(got, reference(x, w, b, r, s, (p, p), d, clamp=(0.0, 6.0)))


@pytest.mark.parametrize("threads", [1, 2])
def test_same_result_on_any_thread_count(threads):
    gen = torch.Generator().manual_seed(7)
    x, w = torch.randn(3, 64, 30, 31, generator=gen), torch.randn(64, 1, 3, 3, generator=gen)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = ops.depthwise_conv2d(x, w, stride=2, padding=1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, ops.depthwise_conv2d(x, w, stride=2, padding=1))
    assert_close(got, reference(x, w, stride=2, padding=(1, 1)))


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 2), (7, 1)])
def test_nonfinite_inputs_and_weights(isa, k, s):  # noqa: F811
    """NaN / Inf in the input, the weight, the bias and the residual, zero weights and zero channels: the same NaN and
    infinite positions as the padded reference (0 x Inf = NaN, Inf - Inf = NaN)."""
    gen = torch.Generator().manual_seed(11)
    x, w = torch.randn(2, 6, 19, 21, generator=gen), torch.randn(6, 1, k, k, generator=gen)
    x[0, 0, 4, 4], x[0, 1, 0, 0], x[1, 2, 18, 20], x[1, 3, 9, 9], x[1, 3, 9, 10] = (float("nan"), float("inf"), float("-inf"),
                                                                                 float("inf"), float("-inf"))
    x[1, 5] = 0.0
    w[1, 0, 0, 0], w[2, 0, k // 2, k // 2], w[3] = float("inf"), float("nan"), 0.0
    w[4, 0, k - 1, 0] = float("-inf")
    b = torch.randn(6, generator=gen)
    b[5] = float("nan")
    r = torch.randn(reference(x, w, stride=s, padding=(k // 2, k // 2)).shape, generator=gen)
    r[0, 0, 0, 0] = float("inf")
    for clamp in [(None, None), (0.0, 6.0)]:
        got = ops.depthwise_conv2d(x, w, b, residual=r, stride=s, padding=k // 2, clamp_min=clamp[0], clamp_max=clamp[1])
        want = reference(x, w, b, r, s, (k // 2, k // 2), clamp=clamp)
        assert want.isnan().any() and want.isinf().any() == (clamp == (None, None))
        assert_close(got, want)
        assert got[:, 5].isnan().all() and got[1, 3].isnan().any()  # 0 x Inf in channel 3


def test_nan_passes_the_clamp():
    x = torch.full((1, 2, 4, 4), float("nan"))
    got = ops.depthwise_conv2d(x, torch.ones(2, 1, 3, 3), padding=1, clamp_min=0.0, clamp_max=6.0)
    assert got.isnan().all()


def test_empty_batch_and_fake_kernel():
    x, w = torch.randn(0, 4, 9, 9), torch.randn(4, 1, 3, 3)
    assert ops.depthwise_conv2d(x, w, stride=2, padding=1).shape == (0, 4, 5, 5)
    args = (torch.randn(2, 4, 10, 9), w, torch.randn(4), None, [2, 1], [1, 0], [1, 2], 0.0, 6.0)
    torch.library.opcheck(torch.ops.nptm.depthwise_conv2d.default, args)
    with torch._subclasses.fake_tensor.FakeTensorMode():
        out = torch.ops.nptm.depthwise_conv2d(torch.empty(2, 4, 10, 9), torch.empty(4, 1, 3, 3), None, None, [2, 1], [1, 0], [1, 2])
    assert out.shape == (2, 4, 5, 5)


def test_bad_arguments_one_value_error_each():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    bad = [
        (dict(input=x.double()), "input must be float32"),
        (dict(input=x[0]), r"input must be \[N, C, H, W\]"),
        (dict(weight=w.double()), "weight must be float32"),
        (dict(weight=torch.randn(8, 1, 3, 3)), r"weight must be \[C, 1, kh, kw\]"),
        (dict(weight=torch.randn(4, 2, 3, 3)), r"weight must be \[C, 1, kh, kw\]"),
        (dict(weight=torch.randn(4, 3, 3)), r"weight must be \[C, 1, kh, kw\]"),
        (dict(weight=torch.randn(4, 1, 9, 9)), "smaller than the dilated kernel"),
        (dict(bias=torch.randn(5)), r"bias must be \[4\]"),
        (dict(bias=torch.randn(4).double()), "bias must be float32"),
        (dict(residual=torch.randn(1, 4, 6, 5)), r"residual must be \[1, 4, 6, 6\]"),
        (dict(residual=torch.randn(1, 4, 6, 6).double()), "residual must be float32"),
        (dict(stride=0), "stride must be >= 1"),
        (dict(padding=-1), "padding must be >= 0"),
        (dict(dilation=(1, 0)), "dilation must be >= 1"),
        (dict(stride=(1, 2, 3)), "stride must have 2 values"),
    ]
    for change, message in bad:
        args = dict(input=x, weight=w, bias=None, residual=None, stride=1, padding=1, dilation=1, **{})
        args.update(change)
        with pytest.raises(ValueError, match=message):
            ops.depthwise_conv2d(args.pop("input"), args.pop("weight"), args.pop("bias"), **args)

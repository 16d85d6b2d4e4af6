"""sparse_conv2d with register-blocked weights (values [entries, B]: B consecutive output channels of one group at
each stored tap) on every variant, against nptm.ops.reference and the dense conv, with the tolerance and
non-finite rules of test_sparse_conv2d.py."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sparse_conv2d import SETTINGS, assert_close, isa  # noqa: F401  (isa: the variant fixture)

from nptm import ops
from nptm.ops import reference

BLOCKS = [2, 4, 8]
FEW = settings(SETTINGS, max_examples=25)


def block_weight(shape, block, groups, density, gen, inner=0.0):
    """A weight whose nonzeros come in blocks of ``block`` output channels of one group at one (input channel,
    tap), a fraction ``density`` of the blocks kept, and a fraction ``inner`` of the kept entries zeroed again."""
    cout = shape[0]
    cpg = cout // groups
    rows = -(-cpg // block)
    keep = torch.rand(groups, rows, 1, *shape[1:], generator=gen) < density
    keep = keep.expand(groups, rows, block, *shape[1:]).reshape(groups, rows * block, *shape[1:])[:, :cpg].reshape(shape)
    w = torch.randn(shape, generator=gen) * keep
    return w * (torch.rand(shape, generator=gen) >= inner)


def run_both(x, w, block, bias=None, residual=None, stride=1, padding=0, dilation=1, groups=1, clamp=(None, None)):
    packed = ops.compress_weight(w, block, groups)
    got = ops.sparse_conv2d(x, *packed, w.shape, bias, residual=residual, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, clamp_min=clamp[0], clamp_max=clamp[1])
    want = reference.sparse_conv2d(x, *packed, w.shape, bias, residual, stride, padding, dilation, groups, *clamp)
    return got, want


@st.composite
def convs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 5)), groups * draw(st.integers(1, 19))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    n = draw(st.sampled_from([1, 2, 17]))
    big = 12 if n > 2 else 37
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), big))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), big))
    return dict(n=n, cin=cin, cout=cout, k=(kh, kw), stride=stride, padding=padding, dilation=dilation, groups=groups, hw=(h, w),
                block=draw(st.sampled_from(BLOCKS)), density=draw(st.sampled_from([0.0, 0.1, 0.4, 1.0])),
                inner=draw(st.sampled_from([0.0, 0.5])), bias=draw(st.booleans()), residual=draw(st.booleans()),
                clamp=draw(st.sampled_from([(None, None), (0.0, None), (-0.5, 0.5)])),
                layout=draw(st.sampled_from(["contiguous", "channels_last", "strided"])), seed=draw(st.integers(0, 2**31 - 1)))


def make_input(shape, layout, gen):
    if layout == "strided":  # every other column of a wider tensor
        return torch.randn(*shape[:-1], 2 * shape[-1], generator=gen)[..., ::2]
    x = torch.randn(shape, generator=gen)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


@given(c=convs())
@FEW
def test_matches_reference_and_dense_conv(isa, c):  # noqa: F811
    gen = torch.Generator().manual_seed(c["seed"])
    x = make_input((c["n"], c["cin"], *c["hw"]), c["layout"], gen)
    w = block_weight((c["cout"], c["cin"] // c["groups"], *c["k"]), c["block"], c["groups"], c["density"], gen, c["inner"])
    b = torch.randn(c["cout"], generator=gen) if c["bias"] else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    dense = F.conv2d(x, w, b, **kw)
    r = torch.randn(dense.shape, generator=gen) if c["residual"] else None
    got, want = run_both(x, w, c["block"], b, r, clamp=c["clamp"], **kw)
    assert_close(got, want)
    dense = dense + (0 if r is None else r)
    assert_close(got, dense if c["clamp"] == (None, None) else dense.clamp(*c["clamp"]))


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("case", ["all_zero", "dense", "zero_blocks", "one_weight", "depthwise", "ragged"])
def test_weight_patterns(isa, block, case):  # noqa: F811
    """Whole zero blocks, one weight, a dense weight, depthwise (rows of one real channel), 13 output channels."""
    gen = torch.Generator().manual_seed(1)
    cout, groups = (8, 8) if case == "depthwise" else (13, 1) if case == "ragged" else (16, 1)
    x = torch.randn(2, 8, 11, 13, generator=gen)
    w = torch.randn(cout, 8 // groups, 3, 3, generator=gen)
    if case == "all_zero":
        w.zero_()
    elif case == "zero_blocks":
        w.view(-1, block, 8, 3, 3)[::2] = 0
    elif case == "one_weight":
        keep = w[5, 5, 2, 0].clone()
        w.zero_()
        w[5, 5, 2, 0] = keep
    elif case == "ragged":
        w = block_weight(w.shape, block, 1, 0.3, gen)
    b = torch.randn(cout, generator=gen)
    got, want = run_both(x, w, block, b, padding=1, groups=groups, clamp=(0.0, None))
    assert_close(got, want)
    assert_close(got, F.relu(F.conv2d(x, w, b, padding=1, groups=groups)))
    if case == "zero_blocks":
        zero = torch.arange(16).view(-1, block)[::2].reshape(-1)
        assert torch.equal(got[:, zero], F.relu(b[zero]).view(1, -1, 1, 1).expand(2, len(zero), 11, 13))


def test_resnet_layer_shapes_4x1(isa):  # noqa: F811
    """Shapes ResNet-50 runs, 4x1 blocks at 10%: 1x1 wide and narrow, strided 1x1 and 3x3, 56 to 7 pixels."""
    gen = torch.Generator().manual_seed(2)
    for cin, cout, hw, k, s in [(64, 256, 56, 1, 1), (128, 128, 28, 3, 2), (512, 1024, 14, 1, 2), (256, 256, 7, 3, 1)]:
        x = torch.randn(1, cin, hw, hw, generator=gen)
        w = block_weight((cout, cin, k, k), 4, 1, 0.1, gen)
        got, want = run_both(x, w, 4, torch.randn(cout, generator=gen), stride=s, padding=k // 2)
        assert_close(got, want)


def test_nonfinite_through_stored_zeros(isa):  # noqa: F811
    """A stored block's zeros form products: NaN/Inf reach every channel of a stored block, and no other."""
    x = torch.randn(1, 2, 5, 5)
    x[0, 1, 2, 2] = float("inf")
    w = torch.zeros(8, 2, 1, 1)
    w[1, 1] = 2.0  # block 0 of 4 (channels 0-3) stores input channel 1; channels 4-7 never read it
    w[5, 0] = 1.0
    got, want = run_both(x, w, 4)
    assert_close(got, want)
    assert got[0, 1, 2, 2] == float("inf") and got[0, [0, 2, 3], 2, 2].isnan().all()  # 0 * inf in the stored block
    assert got[0, 4:].isfinite().all()
    assert torch.equal(got[0, :4].isnan(), F.conv2d(x, w)[0, :4].isnan())


@pytest.mark.parametrize("block", BLOCKS)
def test_empty_tensors(block):
    w = block_weight((6, 3, 3, 3), block, 1, 0.5, torch.Generator().manual_seed(6))
    packed = ops.compress_weight(w, block)
    assert ops.sparse_conv2d(torch.randn(0, 3, 8, 8), *packed, w.shape, padding=1).shape == (0, 6, 8, 8)
    empty = ops.compress_weight(torch.zeros(0, 3, 3, 3), block)
    assert empty[0].shape == (0, block) and ops.sparse_conv2d(torch.randn(2, 3, 8, 8), *empty, (0, 3, 3, 3)).shape == (2, 0, 6, 6)


@given(n=st.sampled_from([1, 3, 40]), fin=st.integers(1, 30), fout=st.integers(1, 30), block=st.sampled_from(BLOCKS),
       seed=st.integers(0, 2**31 - 1))
@settings(FEW, max_examples=10)
def test_sparse_linear_blocks(isa, n, fin, fout, block, seed):  # noqa: F811
    gen = torch.Generator().manual_seed(seed)
    x, w, b = torch.randn(n, fin, generator=gen), block_weight((fout, fin), block, 1, 0.3, gen), torch.randn(fout, generator=gen)
    got = ops.sparse_linear(x, *ops.compress_weight(w, block), w.shape, b, clamp_min=0.0)
    want = F.relu(F.linear(x, w, b))
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-4 * max(want.abs().max().item(), 1e-30)


def test_compress_weight_blocks_layout():
    w = torch.zeros(5, 2, 1, 1)
    w[1, 0], w[4, 1], w[2, 1] = 1.0, 2.0, 3.0  # groups of 5 channels; rows of 4: channels 0-3 and 4 (+3 padding)
    values, taps, row_ptr = ops.compress_weight(w, 4)
    assert row_ptr.tolist() == [0, 2, 3] and taps.tolist() == [0, 1, 1]
    assert values.tolist() == [[0, 1, 0, 0], [0, 0, 3, 0], [2, 0, 0, 0]]
    v2, t2, r2 = ops.compress_weight(torch.ones(6, 1, 1, 1), 2, groups=3)  # depthwise-like: 3 groups of 2 channels
    assert r2.tolist() == [0, 1, 2, 3] and v2.shape == (3, 2) and t2.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="block"):
        ops.compress_weight(w, 3)
    with pytest.raises(ValueError, match="groups"):
        ops.compress_weight(w, 2, groups=2)


def test_fake_kernel_and_bad_rows():
    x, w = torch.randn(2, 4, 10, 10), block_weight((6, 2, 3, 3), 4, 2, 0.5, torch.Generator().manual_seed(4))
    packed = ops.compress_weight(w, 4, groups=2)
    torch.library.opcheck(torch.ops.nptm.sparse_conv2d.default, (x, *packed, list(w.shape), torch.randn(6), None, [2, 2], [1, 1], [1, 1], 2,
                                                                  0.0, None))
    with pytest.raises(ValueError, match="row_ptr"):  # compressed without the groups: rows of the wrong count
        ops.sparse_conv2d(x, *ops.compress_weight(w, 2), w.shape, groups=2)
    with pytest.raises(ValueError, match="block"):
        ops.sparse_conv2d(x, torch.zeros(0, 3), torch.zeros(0, dtype=torch.int32), torch.zeros(5, dtype=torch.int64), w.shape, groups=2)

"""sparse_conv2d's per-call shortcuts: the tap offsets cached per (taps tensor, input geometry) follow in-place
writes, new tensors and new geometries; tiny layers run on one thread and larger ones on all, with the results of
nptm.ops.reference either way (tolerance and non-finite rules of test_sparse_conv2d.py)."""
import pytest
import torch
import torch.nn.functional as F
from test_sparse_conv2d import assert_close, isa, sparse_weight  # noqa: F401  (isa: the variant fixture)

from nptm import ops
from nptm.ops import reference
from nptm.sparse import SparseConv2d


def call(x, v, t, r, shape, **kw):
    got = ops.sparse_conv2d(x, v, t, r, shape, **kw)
    want = reference.sparse_conv2d(x, v, t, r, shape, None, None, kw.get("stride", 1), kw.get("padding", 0), 1, 1)
    assert_close(got, want)
    return got


@pytest.mark.parametrize("mode", ["no_grad", "inference"])
def test_taps_written_in_place(isa, mode):
    """The same taps tensor rewritten in place (as load_state_dict does) reads the new taps, inside inference mode too."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 6, 9, 8, generator=gen), sparse_weight((5, 6, 3, 3), 0.3, gen)
    v, t, r = ops.compress_weight(w)
    mirrored = ops.compress_weight(w.flip(3))  # the same count per row (row_ptr), other taps, still sorted per row
    ctx = torch.inference_mode() if mode == "inference" else torch.no_grad()
    with ctx:
        before = call(x, v, t, r, w.shape, padding=1)
        t.copy_(mirrored[1])  # same storage, same size
        after = call(x, v, t, r, w.shape, padding=1)
        v.copy_(mirrored[0])
        assert_close(call(x, v, t, r, w.shape, padding=1), F.conv2d(x, w.flip(3), padding=1))
        t[0] = 6 * 9  # one past the end: raises, as it would without the cache
        with pytest.raises(IndexError, match="tap"):
            ops.sparse_conv2d(x, v, t, r, w.shape, padding=1)
    assert not torch.equal(before, after)


def test_inference_taps_and_views(isa):
    """Taps made in inference mode (no version counter) and non-contiguous taps are never served stale offsets."""
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 4, 7, 7, generator=gen), sparse_weight((3, 4, 3, 3), 0.5, gen)
    v, t, r = ops.compress_weight(w)
    v2, t2, _ = ops.compress_weight(w.flip(3))
    with torch.inference_mode():
        ti = t.clone()
        call(x, v, ti, r, w.shape, padding=1)
        ti.copy_(t2)  # no version bump for inference tensors
        assert_close(call(x, v2, ti, r, w.shape, padding=1), F.conv2d(x, w.flip(3), padding=1))
    wide = torch.stack([t, t2], 1)
    call(x, v, wide[:, 0], r, w.shape, stride=2)
    wide[:, 0] = t2
    assert_close(call(x, v2, wide[:, 0], r, w.shape, stride=2), F.conv2d(x, w.flip(3), stride=2))


def test_new_tensors_and_geometries(isa):
    """Fresh taps tensors (which may reuse freed memory) and new input sizes, paddings and strides of the same taps."""
    gen = torch.Generator().manual_seed(2)
    w = sparse_weight((4, 3, 3, 3), 0.4, gen)
    for i in range(6):
        v, t, r = ops.compress_weight(w if i % 2 else w.flip(2))
        for hw, kw in [((9, 9), dict(padding=1)), ((12, 5), dict(padding=2, stride=2)), ((9, 9), dict(stride=3))]:
            call(torch.randn(1, 3, *hw, generator=gen), v, t, r, w.shape, **kw)
        del v, t, r


def test_module_weight_loaded_in_place(isa):
    """A SparseConv2d whose buffers load_state_dict overwrites computes with the new weight at its next call."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 10, 10, generator=gen)
    w1 = sparse_weight((8, 8, 3, 3), 0.2, gen)
    w2 = 2 * w1.flip(0).flip(3)  # the same count: load_state_dict copies into the buffers in place
    m1, m2 = SparseConv2d(w1, padding=1), SparseConv2d(w2, padding=1)
    with torch.no_grad():
        m1(x)
        m1.load_state_dict(m2.state_dict())
        assert_close(m1(x), F.conv2d(x, w2, padding=1))


@pytest.mark.parametrize("threads", [1, 2])
def test_tiny_and_large_work_same_results(isa, threads):
    """Layers under and over the one-thread bound (a near-empty 3x3 conv and a 10% one, batch 1 and 4) match the
    reference with 1 and 2 threads; a layer whose whole input fits one layout share and one whose doesn't."""
    gen = torch.Generator().manual_seed(4)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, density, cin, hw in [(1, 0.002, 256, 7), (1, 0.1, 64, 30), (4, 0.1, 64, 17), (1, 0.0005, 512, 14)]:
            x, w = torch.randn(n, cin, hw, hw, generator=gen), sparse_weight((cin, cin, 3, 3), density, gen)
            w[0, 0, 0, 0] = 1.0  # at least one stored weight
            b = torch.randn(cin, generator=gen)
            packed = ops.compress_weight(w)
            got = ops.sparse_conv2d(x, *packed, w.shape, b, padding=1, clamp_min=0.0)
            assert_close(got, reference.sparse_conv2d(x, *packed, w.shape, b, None, 1, 1, 1, 1, 0.0, None))
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("hw", [(7, 7), (14, 14), (13, 5), (4, 4)])
@pytest.mark.parametrize("density", [0.6, 0.05])
def test_misaligned_1x1_input(isa, hw, density):
    """1x1 convs at stride 1 read x itself, or an aligned copy of it where H * W is not a multiple of the vector and
    each input channel feeds many stored weights (density 0.6 of 96 outputs; 0.05 stays below the bound)."""
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(2, 24, *hw, generator=gen), sparse_weight((96, 24, 1, 1), density, gen)
    b, r = torch.randn(96, generator=gen), torch.randn(2, 96, *hw, generator=gen)
    packed = ops.compress_weight(w)
    got = ops.sparse_conv2d(x, *packed, w.shape, b, residual=r, clamp_min=0.0)
    assert_close(got, reference.sparse_conv2d(x, *packed, w.shape, b, r, 1, 0, 1, 1, 0.0, None))
    assert_close(got, F.relu(F.conv2d(x, w, b) + r))


@pytest.mark.parametrize("mode", ["cached", "inference"])
def test_a_row_whose_channels_go_back_is_refused(isa, mode):
    """The kernel bounds a row's vector loads by the input channel of its last entry: a row whose taps go back to an
    earlier channel (not what compress_weight writes, e.g. a crafted file) is refused, also after an in-place write
    of a cached row_ptr."""
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(1, 8, 16, 16, generator=gen), sparse_weight((4, 8, 1, 1), 0.9, gen)
    v, t, r = ops.compress_weight(w)
    ctx = torch.inference_mode() if mode == "inference" else torch.no_grad()
    with ctx:
        call(x, v, t, r, w.shape)
        flipped = t.clone()
        flipped[int(r[0]):int(r[1])] = t[int(r[0]):int(r[1])].flip(0)
        with pytest.raises(ValueError, match="earlier input channel"):
            ops.sparse_conv2d(x, v, flipped, r, w.shape)
        r2 = r.clone()
        call(x, v, t, r2, w.shape)  # cached for (t, r2)
        r2[1:-1] = 0  # one row holding every entry: its channels go back at each row boundary of before
        with pytest.raises(ValueError, match="earlier input channel"):
            ops.sparse_conv2d(x, v, t, r2, w.shape)

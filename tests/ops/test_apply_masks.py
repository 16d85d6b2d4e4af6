"""apply_masks_ (CPU OpenMP / CUDA multi-tensor kernels) against nptm.ops.reference, bit for bit."""
import math

import pytest
import torch
from conftest import FLOAT_DTYPES, GPU, assert_bitwise_equal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nptm import ops
from nptm.ops import reference

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPECIALS = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0], dtype=torch.float64)
LAYOUTS = ["contiguous", "offset", "transposed", "sliced", "channels_last"]


def layout_of(shape, layout):
    """(stride, storage_offset, storage length) of a tensor of `shape` stored in `layout`."""
    meta = dict(device="meta")
    if layout == "transposed":
        t = torch.empty(*shape[:-2], shape[-1], shape[-2], **meta).transpose(-1, -2)
    elif layout == "sliced":  # every other element of the last dim: not dense
        t = torch.empty(*shape[:-1], 2 * shape[-1], **meta)[..., ::2]
    elif layout == "channels_last":
        t = torch.empty(shape, memory_format=torch.channels_last, **meta)
    elif layout == "offset":  # contiguous but misaligned for vector loads
        t = torch.empty(math.prod(shape) + 1, **meta)[1:].view(shape)
    else:
        t = torch.empty(shape, **meta)
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) if t.numel() else 0
    return t.stride(), t.storage_offset(), t.storage_offset() + span


def random_floats(n, dtype, gen):
    """Random bit patterns (NaN payloads, infinities, subnormals, -0.0) mixed with special values."""
    size = torch.empty(0, dtype=dtype).element_size()
    bits = torch.randint(0, 256, (n * size,), generator=gen, dtype=torch.uint8).view(dtype)
    special = SPECIALS[torch.randint(0, len(SPECIALS), (n,), generator=gen)].to(dtype)
    return torch.where(torch.rand(n, generator=gen) < 0.5, bits, special)


def random_mask(shape, dtype, kind, gen):
    if kind == "all":
        return torch.ones(shape, dtype=dtype)
    if kind == "none":
        return torch.zeros(shape, dtype=dtype)
    keep = torch.rand(shape, generator=gen) < 0.5
    if dtype == torch.uint8:  # any nonzero byte keeps
        return keep * torch.randint(1, 256, shape, generator=gen, dtype=torch.uint8)
    return keep


@st.composite
def shape_and_layout(draw, max_dims=4, max_size=6):
    layout = draw(st.sampled_from(LAYOUTS))
    nd = 4 if layout == "channels_last" else draw(st.integers(2 if layout == "transposed" else 1 if layout == "sliced" else 0, max_dims))
    return tuple(draw(st.lists(st.integers(0, max_size), min_size=nd, max_size=nd))), layout


@st.composite
def cases(draw, max_tensors=6):
    """(specs, mask dtype, seed, aliases): one dtype for all tensors or a mix, and further entries
    viewing the storage of earlier ones (the same view again, or the whole storage)."""
    mixed = draw(st.booleans())
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    specs = draw(st.lists(st.tuples(shape_and_layout(), st.sampled_from(["random", "random", "all", "none"]),
                                    st.sampled_from(["same", "flat", "transposed"]),
                                    st.sampled_from(FLOAT_DTYPES) if mixed else st.just(dtype)), max_size=max_tensors))
    aliases = draw(st.lists(st.tuples(st.integers(0, 99), st.sampled_from(["same", "whole"])), max_size=3)) if specs else []
    return specs, draw(st.sampled_from([torch.bool, torch.uint8])), draw(st.integers(0, 2**31)), aliases


def build(specs, mask_dtype, seed, device, aliases=()):
    """Storages (compared whole, so writes outside a view are caught), (storage, view) pairs, and masks."""
    gen = torch.Generator().manual_seed(seed)
    bases, views, masks = [], [], []
    for (shape, layout), mask_kind, mask_layout, dtype in specs:
        stride, offset, length = layout_of(shape, layout)
        bases.append(random_floats(length, dtype, gen).to(device))
        views.append((len(bases) - 1, (shape, stride, offset)))
        m = random_mask(shape, mask_dtype, mask_kind, gen)
        if mask_layout == "flat":
            m = m.reshape(-1)
        elif mask_layout == "transposed" and m.dim() >= 2:  # same logical mask, transposed storage
            m = m.transpose(0, 1).contiguous().transpose(0, 1)
        masks.append(m.to(device))
    for target, kind in aliases:
        base, view = views[target % len(views)]
        if kind == "whole":
            view = ((bases[base].numel(),), (1,), 0)
        views.append((base, view))
        masks.append(random_mask(view[0], mask_dtype, "random", gen).to(device))
    return bases, views, masks


def check_against_reference(specs, mask_dtype, seed, device, aliases=()):
    bases, views, masks = build(specs, mask_dtype, seed, device, aliases)
    expected = [b.clone() for b in bases]
    torch.ops.nptm.apply_masks_([bases[b].as_strided(*v) for b, v in views], masks)
    reference.apply_masks_([expected[b].as_strided(*v) for b, v in views], masks)
    for got, want in zip(bases, expected):
        assert_bitwise_equal(got, want)


@SETTINGS
@given(case=cases())
def test_matches_reference(device, case):
    specs, mask_dtype, seed, aliases = case
    check_against_reference(specs, mask_dtype, seed, device, aliases)


def test_every_dtype_and_layout_with_specials(device):
    for dtype in FLOAT_DTYPES:
        for mask_dtype in (torch.bool, torch.uint8):
            specs = [(((3, 4, 5, 6), layout), "random", "same", dtype) for layout in LAYOUTS] + [(((), "contiguous"), "none", "same", dtype)]
            check_against_reference(specs, mask_dtype, 0, device)


def test_large_tensors_span_many_chunks(device):
    for dtype in FLOAT_DTYPES:
        specs = [(((70001,), "offset"), "random", "same", dtype), (((300, 257), "transposed"), "random", "same", dtype),
                 (((5,), "contiguous"), "none", "same", dtype)]
        check_against_reference(specs, torch.bool, 1, device)


@settings(SETTINGS, max_examples=15)
@given(n=st.integers(301, 340), seed=st.integers(0, 2**31))
def test_more_tensors_than_one_launch_holds(device, n, seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 40, (n,), generator=gen).tolist()
    check_against_reference([(((s,), "contiguous"), "random", "same", torch.float32) for s in sizes], torch.bool, seed, device)


def test_shared_parameter_listed_twice(device):
    """A weight shared by two modules: every copy in the list masks it (AND), in any chunking."""
    for dtype in FLOAT_DTYPES:
        for layout in ("contiguous", "channels_last", "sliced"):
            specs = [(((40, 3, 33, 9), layout), "random", "same", dtype), (((9,), "contiguous"), "random", "same", dtype)]
            check_against_reference(specs, torch.bool, 4, device, aliases=[(0, "same"), (1, "whole"), (0, "same")])


def test_mixed_dtypes_in_one_call(device):
    """bf16 weights with fp32 optimizer states (and every other pairing), one call."""
    specs = [(((20, 3, 30, 5), layout), "random", "same", dtype) for dtype in FLOAT_DTYPES for layout in ("contiguous", "channels_last", "offset")]
    check_against_reference(specs[::-1] + specs, torch.uint8, 5, device)


def test_extra_groups_with_none(device):
    gen = torch.Generator().manual_seed(2)
    shapes = [(4, 3, 3, 3), (4,), (10, 4)]
    params = [random_floats(math.prod(s), torch.float32, gen).view(s).to(device) for s in shapes]
    grads = [params[0].clone().neg_(), None, params[2].clone().mul_(3)]
    bufs = [p.clone().add_(1) for p in params]
    masks = [random_mask(s, torch.bool, "random", gen).to(device) for s in shapes]
    expected = [[t.clone() if t is not None else None for t in group] for group in (params, grads, bufs)]
    ops.apply_masks_(params, masks, extra=[grads, bufs])
    for got_group, want_group in zip((params, grads, bufs), expected):
        reference.apply_masks_(*zip(*[(t, m) for t, m in zip(want_group, masks) if t is not None]))
        for got, want in zip(got_group, want_group):
            assert (got is None) == (want is None)
            if got is not None:
                assert_bitwise_equal(got, want)


def test_empty_list(device):
    torch.ops.nptm.apply_masks_([], [])
    ops.apply_masks_([], [], extra=[[]])


@pytest.mark.filterwarnings("ignore:Use of masked_fill_ on expanded tensors")
def test_internally_overlapping_tensor_matches_reference(device):
    gen = torch.Generator().manual_seed(3)
    base = random_floats(3, torch.float32, gen).to(device)
    expected, mask = base.clone(), random_mask((3, 4), torch.bool, "random", gen).to(device)
    torch.ops.nptm.apply_masks_([base.view(3, 1).expand(3, 4)], [mask])
    reference.apply_masks_([expected.view(3, 1).expand(3, 4)], [mask])
    assert_bitwise_equal(base, expected)


@pytest.mark.parametrize(
    "tensors, masks, match",
    [
        ([torch.zeros(4)], [torch.ones(5, dtype=torch.bool)], "mask 0 has 5 elements but tensor 0 has 4"),
        ([torch.zeros(4)], [torch.ones(4)], "mask 0 must be bool or uint8"),
        ([torch.zeros(4)], [torch.ones(4, dtype=torch.int64)], "mask 0 must be bool or uint8"),
        ([torch.zeros(4), torch.zeros(4, dtype=torch.int8)], [torch.ones(4, dtype=torch.bool)] * 2, "tensor 1 has unsupported dtype"),
        ([torch.zeros(4, dtype=torch.int32)], [torch.ones(4, dtype=torch.bool)], "unsupported dtype"),
        ([torch.zeros(4)], [], "1 tensors but 0 masks"),
    ],
)
def test_bad_input_raises_value_error(device, tensors, masks, match):
    tensors, masks = [t.to(device) for t in tensors], [m.to(device) for m in masks]
    with pytest.raises(ValueError, match=match):
        torch.ops.nptm.apply_masks_(tensors, masks)
    with pytest.raises(ValueError, match=match):
        ops.apply_masks_(tensors, masks)


def test_extra_group_length_mismatch_raises():
    with pytest.raises(ValueError, match="extra group 0 has 2 tensors but there are 1 masks"):
        ops.apply_masks_([torch.zeros(2)], [torch.ones(2, dtype=torch.bool)], extra=[[None, None]])


@pytest.mark.skipif(not GPU, reason="needs a GPU and the CUDA kernels")
def test_mixed_devices_raise_value_error():
    with pytest.raises(ValueError, match="is on cpu"):
        torch.ops.nptm.apply_masks_([torch.zeros(4, device="cuda"), torch.zeros(4)], [torch.ones(4, dtype=torch.bool, device="cuda")] * 2)
    with pytest.raises(ValueError, match="is on cpu"):
        torch.ops.nptm.apply_masks_([torch.zeros(4, device="cuda")], [torch.ones(4, dtype=torch.bool)])


def test_mixed_devices_raise_without_gpu():
    # A meta tensor beside a CPU tensor routes to the fake kernel, which must refuse it too.
    with pytest.raises(ValueError, match="different devices"):
        torch.ops.nptm.apply_masks_([torch.zeros(4), torch.zeros(4, device="meta")], [torch.ones(4, dtype=torch.bool)] * 2)
    with pytest.raises(ValueError, match="different devices"):
        ops.global_magnitude_masks([torch.zeros(4), torch.zeros(4, device="meta")], 1)


def test_emulated_plan_is_cached_and_follows_mask_contents():
    """Same tensors again: the cached plan (device chunk table, mask copies) is reused, and masks changed
    in place in between still apply: those walked directly and those the plan copies (a channels_last
    weight with a contiguous mask, a weight listed twice)."""
    gen = torch.Generator().manual_seed(6)
    weights = [random_floats(4 * 3 * 5 * 7, torch.float32, gen).view(4, 3, 5, 7).contiguous(memory_format=torch.channels_last),
               random_floats(600, torch.bfloat16, gen), random_floats(99, torch.float64, gen)]
    tensors = [weights[0], weights[1], weights[2], weights[2]]
    masks = [random_mask(t.shape, torch.bool, "random", gen) for t in tensors]
    hits, misses, _ = torch.ops.nptm._emu_apply_masks_plan_stats()
    for step in range(3):
        expected = [w.clone() for w in weights]
        torch.ops.nptm._emu_apply_masks_(tensors, masks)
        reference.apply_masks_([expected[0], expected[1], expected[2], expected[2]], masks)
        for got, want in zip(weights, expected):
            assert_bitwise_equal(got, want)
        for m in masks:
            m.copy_(random_mask(m.shape, torch.bool, "random", gen))
        weights_refill = [random_floats(w.numel(), w.dtype, gen).view(w.shape) for w in weights]
        for w, new in zip(weights, weights_refill):
            w.copy_(new)
    assert list(torch.ops.nptm._emu_apply_masks_plan_stats())[:2] == [hits + 2, misses + 1]


def test_emulated_graph_capture_needs_a_cached_plan():
    tensors, masks = [torch.ones(70), torch.ones(3, 3)], [torch.zeros(70, dtype=torch.bool), torch.eye(3, dtype=torch.bool)]
    torch.ops.nptm._emu_pretend_capturing(True)
    try:
        with pytest.raises(RuntimeError, match="no cached plan.*inside CUDA graph capture"):
            torch.ops.nptm._emu_apply_masks_(tensors, masks)
        assert tensors[0].eq(1).all()  # refused before touching anything
        torch.ops.nptm._emu_pretend_capturing(False)
        torch.ops.nptm._emu_apply_masks_(tensors, masks)  # warms the cache
        tensors[0].fill_(1)
        torch.ops.nptm._emu_pretend_capturing(True)
        torch.ops.nptm._emu_apply_masks_(tensors, masks)
    finally:
        torch.ops.nptm._emu_pretend_capturing(False)
    assert not tensors[0].any() and torch.equal(tensors[1], torch.eye(3))

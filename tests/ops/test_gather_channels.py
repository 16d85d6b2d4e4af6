"""gather_channels (CPU OpenMP / CUDA batched kernels) against nptm.ops.reference, bit for bit."""
import copy

import pytest
import torch
from conftest import FLOAT_DTYPES, GPU, assert_bitwise_equal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_apply_masks import layout_of, random_floats, shape_and_layout
from torch import nn

from nptm import ops
from nptm.ops import reference

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = FLOAT_DTYPES + [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


def random_values(n, dtype, gen):
    if dtype == torch.bool:
        return torch.randint(0, 2, (n,), generator=gen).bool()
    if dtype.is_floating_point:
        return random_floats(n, dtype, gen)
    size = torch.empty(0, dtype=dtype).element_size()
    return torch.randint(0, 256, (n * size,), generator=gen, dtype=torch.uint8).view(dtype)


@st.composite
def entries(draw):
    """(shape, layout, dim, dtype, channels to keep, index dtype, strided index)."""
    shape, layout = draw(shape_and_layout(max_size=5).filter(lambda s: len(s[0]) > 0))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    keep = draw(st.lists(st.integers(0, shape[dim] - 1), max_size=7)) if shape[dim] else []
    return shape, layout, dim, draw(st.sampled_from(DTYPES)), keep, draw(st.sampled_from([torch.int64, torch.int32])), draw(st.booleans())


def build(specs, seed, device):
    gen = torch.Generator().manual_seed(seed)
    tensors, dims, indices = [], [], []
    for shape, layout, dim, dtype, keep, index_dtype, strided_index in specs:
        stride, offset, length = layout_of(shape, layout)
        tensors.append(random_values(length, dtype, gen).to(device).as_strided(shape, stride, offset))
        index = torch.tensor(keep, dtype=index_dtype)
        if strided_index:  # every other entry of a longer tensor
            index = torch.stack([index, torch.full_like(index, -1)], 1).reshape(-1)[::2]
        dims.append(dim)
        indices.append(index.to(device))
    return tensors, dims, indices


def check_against_reference(specs, seed, device):
    tensors, dims, indices = build(specs, seed, device)
    before = [t.clone() for t in tensors]
    got = torch.ops.nptm.gather_channels(tensors, dims, indices)
    want = reference.gather_channels(tensors, dims, indices)
    assert len(got) == len(want)
    for g, w, t, b in zip(got, want, tensors, before):
        assert_bitwise_equal(g, w)
        assert g.is_contiguous() and g.device == t.device
        assert g.numel() == 0 or g.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()  # a new tensor
        assert_bitwise_equal(t, b)  # input untouched


@SETTINGS
@given(specs=st.lists(entries(), max_size=5), seed=st.integers(0, 2**31))
def test_matches_reference(device, specs, seed):
    check_against_reference(specs, seed, device)


def test_every_dtype_and_layout(device):
    specs = [((4, 6, 3, 5), layout, dim, dtype, [2, 0, 0, 1], torch.int32, False)
             for dtype in DTYPES for layout in ("contiguous", "offset", "transposed", "sliced", "channels_last") for dim in (0, 1, -1)]
    check_against_reference(specs, 0, device)


def test_large_and_many_tensors(device):
    big = [((64, 3000), "contiguous", 1, torch.float32, list(range(0, 3000, 2)), torch.int64, False),
           ((2, 99, 1001), "offset", 1, torch.float16, list(range(98, -1, -3)), torch.int64, False)]
    small = [((3, 4), "contiguous", i % 2, torch.float32, [i % 3], torch.int64, False) for i in range(310)]
    check_against_reference(big + small, 1, device)


def test_empty_list(device):
    assert torch.ops.nptm.gather_channels([], [], []) == []
    assert ops.gather_channels([]) == []


@pytest.mark.parametrize("bad, index_dtype", [(3, torch.int64), (-1, torch.int64), (2**40, torch.int64), (3, torch.int32), (-1, torch.int32)])
def test_out_of_range_index_raises_index_error(device, bad, index_dtype):
    tensors = [torch.zeros(2, 3, device=device), torch.zeros(4, 3, device=device), torch.zeros(5, device=device)]
    indices = [torch.tensor(i, dtype=index_dtype, device=device) for i in ([0, 1], [0, bad, 1], [bad])]
    with pytest.raises(IndexError, match=f"index {bad} is out of range for tensor 1 with size 3 along dim 1"):
        torch.ops.nptm.gather_channels(tensors, [0, 1, 0], indices)


def test_unchecked_out_of_range_index_fails_a_device_assert(device, emulated):
    """synchronous_check=False: no host sync; the emulated device assert stands for the CUDA error."""
    if device == "cuda":
        pytest.skip("a failed device assert leaves the CUDA context unusable")
    tensors, indices = [torch.zeros(4, 3, device=device)], [torch.tensor([0, 3], device=device)]
    with pytest.raises(RuntimeError if emulated else IndexError, match="device assert failed" if emulated else "out of range"):
        ops.gather_channels([(tensors[0], 1, indices[0])], synchronous_check=False)
    ok = ops.gather_channels([(tensors[0], 1, indices[0][:1])], synchronous_check=False)
    assert_bitwise_equal(ok[0], tensors[0][:, :1])


def test_out_of_range_index_raises_even_for_empty_tensor(device):
    with pytest.raises(IndexError, match="tensor 0 with size 0"):
        torch.ops.nptm.gather_channels([torch.zeros(3, 0, device=device)], [1], [torch.tensor([0], device=device)])


@pytest.mark.parametrize(
    "tensors, dims, indices, error, match",
    [
        ([torch.zeros(2, 3)], [2], [torch.tensor([0])], IndexError, "dim 2 out of range for tensor 0"),
        ([torch.zeros(2, 3)], [-3], [torch.tensor([0])], IndexError, "dim -3 out of range for tensor 0"),
        ([torch.zeros(())], [0], [torch.tensor([0])], IndexError, "tensor 0 is 0-dimensional"),
        ([torch.zeros(2, 3)], [0], [torch.tensor([[0]])], ValueError, "index 0 must be a 1-D int64 or int32 tensor"),
        ([torch.zeros(2, 3)], [0], [torch.tensor([0.0])], ValueError, "index 0 must be a 1-D int64 or int32 tensor"),
        ([torch.zeros(2, 3)], [0, 1], [torch.tensor([0])], ValueError, "1 tensors, 2 dims, 1 indices"),
    ],
)
def test_bad_input(device, tensors, dims, indices, error, match):
    with pytest.raises(error, match=match):
        torch.ops.nptm.gather_channels([t.to(device) for t in tensors], dims, [i.to(device) for i in indices])


@pytest.mark.skipif(not GPU, reason="needs a GPU and the CUDA kernels")
def test_mixed_devices_raise_value_error():
    with pytest.raises(ValueError, match="is on cpu"):
        torch.ops.nptm.gather_channels([torch.zeros(3, device="cuda"), torch.zeros(3)], [0, 0], [torch.tensor([0], device="cuda")] * 2)
    with pytest.raises(ValueError, match="is on cpu"):
        torch.ops.nptm.gather_channels([torch.zeros(3, device="cuda")], [0], [torch.tensor([0])])


def test_conv_bn_conv_filter_removal(device):
    """Removing conv1's weakest filters with its BN channels and conv2's inputs is the same network as
    zeroing conv2's weights on those inputs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1)).double()
    conv1, bn, _, conv2 = net
    for t in (bn.weight, bn.bias, bn.running_mean):
        t.data.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    net = net.to(device=device, memory_format=torch.channels_last).eval()
    momentum = {name: torch.randn_like(p) for name, p in net.named_parameters()}
    keep = conv1.weight.abs().sum((1, 2, 3)).topk(5).indices.sort().values  # PFEC: largest L1 filters
    triples = [(conv1.weight, 0, keep), (conv1.bias, 0, keep), (bn.weight, 0, keep), (bn.bias, 0, keep.int()),
               (bn.running_mean, 0, keep), (bn.running_var, -1, keep), (conv2.weight, 1, keep.int()),
               (momentum["0.weight"], 0, keep), (momentum["3.weight"], -3, keep)]
    sliced = ops.gather_channels(triples)
    for got, want in zip(sliced, reference.gather_channels(*zip(*triples))):
        assert_bitwise_equal(got, want)

    small = copy.deepcopy(net)
    small[0], small[1], small[3] = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.Conv2d(5, 5, 3, padding=1)
    small = small.double().to(device).eval()
    targets = (small[0].weight, small[0].bias, small[1].weight, small[1].bias, small[1].running_mean, small[1].running_var, small[3].weight)
    for target, new in zip(targets, sliced):
        target.data = new
    small[3].bias.data = conv2.bias.detach().clone()
    pruned = torch.ones(8, dtype=torch.bool, device=device)
    pruned[keep] = False
    with torch.no_grad():
        conv2.weight[:, pruned] = 0
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, device=device)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), rtol=1e-12, atol=1e-12)


def test_mixed_devices_raise_without_gpu():
    with pytest.raises(ValueError, match="different devices"):
        torch.ops.nptm.gather_channels([torch.zeros(3), torch.zeros(3, device="meta")], [0, 0], [torch.tensor([0])] * 2)

"""The block form of the sparse layers (register-blocked kernel) and channels_last max-pooling in ``sparsify``:
the block picked from the weight's structure, the packings timed for an unstructured weight and the one kept, the same function as the dense masked model (within 1e-4 of its
largest output), a save/load round trip, and pooling that returns exactly torch's values."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_sparsify import assert_same_function, batches, randomize_bn
from torch import nn

import nptm
from nptm.sparse import SparseConv2d, SparseLinear, sparsify
from nptm.sparse import LayerChoice
from nptm.sparse.modules import PACK_SLACK, ChannelsLastMaxPool2d, best_block, block_candidates, block_costs, to_sparse


@torch.no_grad()
def prune_blocks(model, sparsity, block, gen):
    """Zero the ``sparsity`` fraction of each layer's blocks (``block`` output channels at one input tap) at random."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[0] % block == 0:
            w = m.weight.view(m.weight.shape[0] // block, block, -1)
            w.mul_(torch.rand(w.shape[0], 1, w.shape[2], generator=gen) >= sparsity)


def test_best_block_follows_the_structure():
    gen = torch.Generator().manual_seed(0)
    for block in (1, 2, 4, 8):  # the cheapest block by the ISA's costs: 1 for unstructured, else one dividing the structure's
        conv = nn.Conv2d(32, 64, 3)
        prune_blocks(conv, 0.9, block, gen)
        chosen = best_block(conv.weight)
        assert chosen == 1 if block == 1 else chosen > 1 and block % chosen == 0
        assert to_sparse(conv).block == chosen
    conv = nn.Conv2d(8, 12, 1, groups=4)  # 3 channels per group: no block divides them
    prune_blocks(conv, 0.5, 4, gen)
    assert best_block(conv.weight, 4) == 1
    lin = nn.Linear(40, 16)
    prune_blocks(lin, 0.8, 8, gen)
    assert to_sparse(lin).block in (4, 8) and to_sparse(lin, block=1).block == 1


def test_block_candidates_are_the_packings_near_the_best_model_cost():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(24, 16, 3, 3, generator=gen) * (torch.rand(24, 16, 3, 3, generator=gen) < 0.45)
    costs = block_costs(w)
    nonzero = (w != 0).view(24, -1)
    assert set(costs) == {1, 2, 4, 8} and costs[1] == nonzero.sum()
    assert costs[8] >= nonzero.view(3, 8, -1).any(1).sum() * 8 * 0.5  # every 8-row's union stored whole
    found = block_candidates(w)
    assert found[0] == best_block(w) and found == sorted(found, key=lambda b: (costs[b], b))
    assert set(found) == {b for b in costs if costs[b] <= PACK_SLACK * costs[found[0]]}
    assert set(block_candidates(w[:20])) <= {1, 2, 4}  # 8 does not divide 20 channels
    assert block_candidates(w.view(4, 6, 16, 3, 3)[:, :3].reshape(12, 16, 3, 3), groups=4) == [1]  # 3 per group


def test_sparsify_keeps_the_fastest_packing_of_an_unstructured_weight():
    """A mid-density unstructured 1x1 conv: every packing near the best model cost is timed, the layers that decide
    together keep one, the module holds it, replaying it rebuilds it, and the function is the masked model's."""
    torch.manual_seed(4)
    convs = [nn.Conv2d(64, 64, 1) for _ in range(2)]
    model = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU()).eval()
    with torch.no_grad():
        for c in convs:
            c.weight.mul_(torch.rand_like(c.weight) < 0.45)
    x = torch.randn(1, 64, 28, 28)
    sparse = sparsify(model, x, batch_sizes=(), rounds=3, cache=False)
    for c in sparse.sparse_layers:
        want = block_candidates(model.get_submodule(c.name).weight)
        assert len(want) > 1 and set(c.dense_ms) == {1}  # at least two packings were candidates
        if c.sparse:
            assert c.block in want and sparse.get_submodule(c.name).block == c.block
        else:
            assert c.block == 0
    assert len({c.block for c in sparse.sparse_layers}) == 1 and sparse.sparse_layers[1].group == "0"  # decided together
    forced = [LayerChoice(c.name, c.kind, c.shape, c.density, sparse=True, block=4) for c in sparse.sparse_layers]
    again = sparsify(model, x, choices=forced)
    assert [again.get_submodule(c.name).block for c in forced] == [4, 4]
    with torch.inference_mode():
        for m in (sparse, again):
            assert (m(x) - model(x)).abs().max() <= 1e-4 * model(x).abs().max()
    forced[0].block = 3
    with pytest.raises(ValueError, match="choices give 0 block 3; it must be 1, 2, 4 or 8"):
        sparsify(model, x, choices=forced)


def test_block_layer_dense_weight_and_repr():
    gen = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(6, 10, 3, groups=2, padding=1)
    prune_blocks(conv, 0.6, 2, gen)
    for block in (2, 4):  # 5 channels per group: rows of 4 are ragged
        layer = SparseConv2d(conv.weight, conv.bias, padding=1, groups=2, block=block)
        assert torch.equal(layer.dense_weight(), conv.weight.detach())
        assert f"block={block}" in repr(layer)
        x = torch.randn(2, 6, 9, 9, generator=gen)
        torch.testing.assert_close(layer(x), conv(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("block", [2, 8])  # the kernel tests run 4 as well
def test_block_pruned_resnet_same_function(block, tmp_path):
    gen = torch.Generator().manual_seed(2)
    model = randomize_bn(torchvision.models.resnet18(num_classes=16).eval())
    prune_blocks(model, 0.8, block, gen)
    sparse = sparsify(model, batches(16)[0], measure=False)
    layers = [m for m in sparse.modules() if isinstance(m, (SparseConv2d, SparseLinear))]
    assert len(layers) == 21 and all(m.block > 1 and block % m.block == 0 for m in layers)
    assert_same_function(model, sparse, [batches(16)[i] for i in (0, 3)])
    nptm.save_sparse(sparse, tmp_path / "m.pt")
    loaded = nptm.load_sparse(tmp_path / "m.pt")
    x = batches(16)[0]
    with torch.inference_mode():
        assert torch.equal(loaded(x), sparse(x))


def test_channels_last_max_pool_exact():
    """Ties of -0.0 and 0.0, NaN, -inf and ceil_mode give torch's NCHW values bit for bit."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 13, 11, generator=gen).round()  # many ties
    x[x == 0] = -0.0
    x[0, 1, ::3, ::2] = 0.0
    x[1, 2, 4, 4], x[1, 3, 0, 0], x[0, 4] = float("nan"), float("-inf"), float("-inf")
    for k, s, p, d, ceil in [(3, 2, 1, 1, False), (2, 2, 0, 1, True), (3, 1, 1, 2, False)]:
        got = ChannelsLastMaxPool2d(k, s, p, d, ceil_mode=ceil)(x)
        want = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
        assert got.is_contiguous() and torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(), want.nan_to_num()) and torch.equal(got.signbit(), want.signbit())


def test_sparsify_pooling_measured_and_exact():
    torch.manual_seed(4)
    model = randomize_bn(torchvision.models.resnet18().eval())
    x = torch.randn(2, 3, 96, 96)
    sparse = sparsify(model, x, batch_sizes=(), rounds=3)
    pool = sparse.get_submodule("maxpool")
    assert type(pool) in (nn.MaxPool2d, ChannelsLastMaxPool2d)  # whichever measured faster
    assert_same_function(model, sparse, [x, x[:1]])

"""Kx1 block patterns (nptm.pruning.patterns) against a plain-PyTorch reference that concatenates every layer's
blocks: exact block counts, whole blocks, pruned stays pruned over IMP rounds, ties, Cout % K != 0 tails, grouped
convs, criterion sums, GMP and the sparse-training projection."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from nptm.pruning import PRUNERS, iterative_amounts, prune_unstructured
from nptm.pruning.criteria import CRITERIA
from nptm.pruning.gradual import prune_to_sparsity
from nptm.pruning.masks import Masks, prunable_weights
from nptm.pruning.patterns import NM, Blocks, as_pattern
from nptm.pruning.sparse_training import SPARSE_TRAINING


def _blocks_of(rows: int, groups: int, k: int) -> list[list[int]]:
    """The output channels of each block row: K consecutive channels within a group, the group's tail shorter."""
    per = rows // groups
    return [list(range(g * per + b, min(g * per + b + k, (g + 1) * per))) for g in range(groups) for b in range(0, per, k)]


def _reference(scores, old, groups, k, amount):
    """Concatenate every layer's blocks (layer, block row, input position order), prune the round(amount * alive)
    lowest alive block scores (sum of alive entries x K / block size), earlier first among equals."""
    blocks = []  # (score, layer, channels, column)
    for li, (s, m, g) in enumerate(zip(scores, old, groups)):
        s2, m2 = s.reshape(s.shape[0], -1).double(), m.reshape(m.shape[0], -1)
        for chans in _blocks_of(s2.shape[0], g, k):
            for col in range(s2.shape[1]):
                alive = m2[chans, col]
                if alive.any():
                    blocks.append((float((s2[chans, col] * alive).sum()) * k / len(chans), li, chans, col))
    n = round(amount * len(blocks)) if isinstance(amount, float) else amount
    order = sorted(range(len(blocks)), key=lambda i: (blocks[i][0], i))
    out = [m.reshape(m.shape[0], -1).clone() for m in old]
    for i in order[:n]:
        _, li, chans, col = blocks[i]
        out[li][chans, col] = False
    return [o.reshape(m.shape) for o, m in zip(out, old)]


def _block_rows_whole(mask, groups, k) -> bool:
    m2 = mask.reshape(mask.shape[0], -1)
    return all(bool((m2[chans].all(0) | ~m2[chans].any(0)).all()) for chans in _blocks_of(m2.shape[0], groups, k))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([2, 4, 8]), st.lists(st.tuples(st.integers(1, 13), st.integers(1, 5), st.sampled_from([1, 2])),
                                             min_size=1, max_size=3),
       st.sampled_from(["random", "ties", "zeros"]), st.sampled_from(["none", "blocks", "entries"]),
       st.floats(0.0, 0.99), st.integers(0, 2**31 - 1))
def test_masks_match_the_concatenating_reference(k, layers, kind, old_kind, amount, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(rows * groups, cols) for rows, cols, groups in layers]
    groups = [groups for _, _, groups in layers]
    draw = {"random": lambda s: torch.rand(s, generator=g), "ties": lambda s: torch.randint(0, 3, s, generator=g).float(),
            "zeros": torch.zeros}[kind]
    scores = [draw(s) for s in shapes]
    if old_kind == "none":
        old = [torch.ones(s, dtype=torch.bool) for s in shapes]
    elif old_kind == "entries":
        old = [torch.rand(s, generator=g) > 0.3 for s in shapes]
    else:  # an earlier block pruning
        old = _reference([torch.rand(s, generator=g) for s in shapes], [torch.ones(s, dtype=torch.bool) for s in shapes],
                         groups, k, 0.5)
    got = Blocks(f"{k}x1", k).masks(scores, amount, scores=scores, old=old, groups=groups)
    want = _reference(scores, old, groups, k, amount)
    for a, b, o in zip(got, want, old):
        assert torch.equal(a, b)
        assert not (a & ~o).any()  # pruned stays pruned


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 6, 3)  # 6 % 4 != 0: a tail block of 2 channels per input position
        self.c = nn.Conv2d(6, 12, 1, groups=3)  # blocks within each group of 4 channels
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.c(self.b(self.a(x))).mean((2, 3)))


GROUPS = {"a.weight": 1, "b.weight": 1, "c.weight": 3, "fc.weight": 1}


@pytest.mark.parametrize("criterion", ["magnitude", "lamp", "random"])
@pytest.mark.parametrize("k", [2, 4])
def test_every_criterion_prunes_whole_blocks_by_summed_scores(criterion, k):
    torch.manual_seed(0)
    model = Net()
    params = prunable_weights(model, include_linear=True)
    scores = CRITERIA[criterion]().scores(model, params, generator=torch.Generator().manual_seed(3))
    masks = prune_unstructured(model, criterion, 0.7, include_linear=True, pattern=f"{k}x1",
                               generator=torch.Generator().manual_seed(3))
    groups = [GROUPS[n] for n in params]
    want = _reference([scores[n] for n in params], [torch.ones_like(p, dtype=torch.bool) for p in params.values()],
                      groups, k, 0.7)
    total = sum(len(_blocks_of(p.shape[0], g, k)) * p[0].numel() for p, g in zip(params.values(), groups))
    pruned = 0
    for (n, p), w, g in zip(params.items(), want, groups):
        assert torch.equal(masks[n], w), n
        assert _block_rows_whole(masks[n], g, k)
        assert torch.equal(p == 0, ~masks[n] | (p == 0))  # applied to the weights
        pruned += sum(int((~masks[n].reshape(p.shape[0], -1)[chans].any(0)).sum()) for chans in _blocks_of(p.shape[0], g, k))
    assert pruned == round(0.7 * total)


def test_imp_rounds_keep_pruned_blocks_and_per_layer_budgets():
    torch.manual_seed(1)
    model = Net()
    masks = None
    for amount in iterative_amounts(0.9, 3):
        before = None if masks is None else {n: m.clone() for n, m in masks.items()}
        model, masks = PRUNERS["magnitude"].prune(model, amount, masks=masks, pattern="4x1",
                                                  max_layer_sparsity=1.0)  # the tiny layer b may empty
        for n, m in masks.items():
            assert _block_rows_whole(m, GROUPS[n], 4)
            if before is not None:
                assert not (m & ~before[n]).any()
    per_layer = prune_unstructured(Net(), "magnitude", 0.5, pattern="2x1", per_layer=True)
    for n, m in per_layer.items():
        blocks = _blocks_of(m.shape[0], GROUPS[n], 2)
        dead = sum(int((~m.reshape(m.shape[0], -1)[c].any(0)).sum()) for c in blocks)
        assert dead == round(0.5 * len(blocks) * m[0].numel()), n


def test_ties_tails_and_one_by_one():
    conv = nn.Conv2d(1, 6, 1, bias=False)  # Cout 6, K 4: blocks {0..3} and the tail {4, 5}
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.5, 1.5]).reshape(6, 1, 1, 1))
    masks = prune_unstructured(conv, "magnitude", 1, pattern="4x1")  # tail scores 1.5 * 4 = 6 > 4: block 0 goes
    assert masks["weight"].flatten().tolist() == [False] * 4 + [True] * 2
    with torch.no_grad():
        conv.weight.fill_(1.0)
    masks = prune_unstructured(conv, "magnitude", 1, pattern="4x1")  # equal scores: the earlier block goes first
    assert masks["weight"].flatten().tolist() == [False] * 4 + [True] * 2
    torch.manual_seed(2)
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    one = prune_unstructured(a, "lamp", 0.6, pattern="1x1")
    plain = prune_unstructured(b, "lamp", 0.6)
    assert all(torch.equal(one[n], plain[n]) for n in one)


def test_gmp_and_the_sparse_training_projection_respect_blocks():
    torch.manual_seed(3)
    model = Net()
    masks = Masks.ones(prunable_weights(model))
    for s in (0.3, 0.6, 0.8):
        before = {n: m.clone() for n, m in masks.items()}
        prune_to_sparsity(model, masks, s, pattern="4x1")
        total, alive = Blocks("4x1", 4).count([masks[n] for n in masks], [GROUPS[n] for n in masks])
        assert total - alive == round(s * total)
        assert all(not (masks[n] & ~before[n]).any() and _block_rows_whole(masks[n], GROUPS[n], 4) for n in masks)
    model = Net()
    method = SPARSE_TRAINING["dnw"]()
    method.prepare(model, sparsity=0.75, total_iters=10, iters_per_epoch=5)
    masks = method.finish(model, pattern="8x1").masks
    total, alive = Blocks("8x1", 8).count([masks[n] for n in masks], [GROUPS[n] for n in masks])
    assert total - alive == round(0.75 * total)
    assert all(_block_rows_whole(masks[n], GROUPS[n], 8) for n in masks)


def test_pattern_names():
    assert as_pattern(None) == as_pattern("1x1") == Blocks("1x1", 1)
    assert as_pattern("4x1") == Blocks("4x1", 4) and as_pattern("2:4") == NM("2:4", 2, 4)
    for bad in ("1x4", "0x1", "4", "x1", "3:2"):
        with pytest.raises(ValueError, match="pattern"):
            as_pattern(bad)
    with pytest.raises(ValueError, match="GMP"):
        prune_to_sparsity(Net(), Masks.ones(prunable_weights(Net())), 0.5, pattern="2:4")

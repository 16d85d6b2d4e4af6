import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nptm.ops
from nptm.models import build_model
from nptm.pruning import PRUNERS, Masks, iterative_amounts, prunable_weights, prune_unstructured


def digits(seed=0, device="cpu"):
    torch.manual_seed(seed)
    return build_model("digits_net", 10, 1).to(device)


def test_prunable_weights():
    m = digits()
    assert list(prunable_weights(m)) == ["features.0.weight", "features.3.weight", "features.7.weight"]
    assert list(prunable_weights(m, include_linear=True))[-1] == "classifier.0.weight"
    assert prunable_weights(m)["features.0.weight"] is m.features[0].weight


@settings(max_examples=25, deadline=None)
@given(amount=st.floats(0, 1), second=st.floats(0, 1), include_linear=st.booleans())
def test_magnitude_exact_global_count_and_threshold(amount, second, include_linear):
    m = digits()
    params = prunable_weights(m, include_linear)
    dense = {n: p.detach().clone() for n, p in params.items()}
    n_total = sum(p.numel() for p in params.values())
    masks = prune_unstructured(m, "magnitude", amount, include_linear=include_linear, max_layer_sparsity=1.0)
    alive = n_total - round(amount * n_total)
    assert masks.nonzero() == alive
    kept = torch.cat([dense[n][masks[n]].abs() for n in params])
    gone = torch.cat([dense[n][~masks[n]].abs() for n in params])
    if kept.numel() and gone.numel():
        assert gone.max() <= kept.min()
    for n, p in params.items():  # applied to the model
        assert torch.equal(p.detach(), dense[n] * masks[n])
    masks2 = prune_unstructured(m, "magnitude", second, masks=masks, include_linear=include_linear,
                                max_layer_sparsity=1.0)  # the plain top-k, empty layers allowed
    assert masks2.nonzero() == alive - round(second * alive)
    assert all(not (masks2[n] & ~masks[n]).any() for n in params)  # pruned stay pruned


def test_layer_magnitude_per_layer_counts():
    m = digits()
    masks = prune_unstructured(m, "magnitude", 0.37, per_layer=True)
    for n, w in prunable_weights(m).items():
        assert int(masks[n].sum()) == w.numel() - round(0.37 * w.numel())
    again = prune_unstructured(m, "magnitude", 0.5, masks=masks, per_layer=True)
    for n in masks:
        alive = int(masks[n].sum())
        assert int(again[n].sum()) == alive - round(0.5 * alive)


def test_random_is_seeded_and_exact():
    a = prune_unstructured(digits(), "random", 0.6, generator=torch.Generator().manual_seed(1))
    b = prune_unstructured(digits(), "random", 0.6, generator=torch.Generator().manual_seed(1))
    c = prune_unstructured(digits(), "random", 0.6, generator=torch.Generator().manual_seed(2))
    mag = prune_unstructured(digits(), "magnitude", 0.6)
    assert a.nonzero() == mag.nonzero() == c.nonzero()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    assert any(not torch.equal(a[n], mag[n]) for n in a)


def test_bad_inputs():
    m = digits()
    with pytest.raises(ValueError, match="magnitude"):
        prune_unstructured(m, "l2", 0.5)
    with pytest.raises(ValueError):
        prune_unstructured(m, "magnitude", 1.5)
    with torch.no_grad():
        m.features[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="features.3.weight"):
        prune_unstructured(m, "magnitude", 0.5)
    with pytest.raises(ValueError, match="scores channels"):
        prune_unstructured(m, "l1_filters", 0.5)
    assert {"magnitude", "layer_magnitude", "random", "lamp"} <= set(PRUNERS)


@settings(max_examples=50, deadline=None)
@given(s=st.floats(0, 0.999), n=st.integers(1, 20))
def test_iterative_amounts_compound(s, n):
    amounts = iterative_amounts(s, n)
    assert len(amounts) == n
    remaining = 1.0
    for a in amounts:
        remaining *= 1 - a
    assert remaining == pytest.approx(1 - s, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.2])
def test_iterative_amounts_range(bad):
    with pytest.raises(ValueError):
        iterative_amounts(bad, 3)
    with pytest.raises(ValueError):
        iterative_amounts(0.5, 0)


def _train_steps(model, opt, masks=None, steps=2):
    x, y = torch.randn(16, 1, 8, 8, device=next(model.parameters()).device), torch.arange(16, device=next(model.parameters()).device) % 10
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if masks is not None:
            masks.apply(model, opt)
        opt.step()
        if masks is not None:
            masks.apply(model)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: torch.optim.Adam(p, lr=0.01),
], ids=["sgd_nesterov", "adam"])
def test_masks_survive_optimizer_steps(make_opt, device):
    m = digits(device=device)
    opt = make_opt(m.parameters())
    _train_steps(m, opt)  # dense steps: momentum buffers are non-zero everywhere
    masks = prune_unstructured(m, "magnitude", 0.8)
    masks.apply(m, opt)
    for name in masks:
        p = m.get_parameter(name)
        for buf in opt.state[p].values():
            if buf.shape == p.shape:
                assert not buf[~masks[name]].any()
    # one step after apply: grads and buffers are zero at pruned entries, so the weights stay exactly zero
    x, y = torch.randn(16, 1, 8, 8, device=device), torch.arange(16, device=device) % 10
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    masks.apply(m, opt)
    opt.step()
    for name in masks:
        assert not m.get_parameter(name)[~masks[name]].any()
    _train_steps(m, opt, masks)
    assert masks.nonzero() == sum(int(p.count_nonzero()) for p in prunable_weights(m).values())


def test_stale_momentum_moves_pruned_weights_without_optimizer_masking():
    # The control for the test above: masking only the weights lets the old momentum revive them.
    m = digits()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    _train_steps(m, opt)
    masks = prune_unstructured(m, "magnitude", 0.8)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(torch.randn(4, 1, 8, 8)), torch.arange(4)).backward()
    opt.step()
    assert any(m.get_parameter(n)[~masks[n]].any() for n in masks)


def test_apply_is_one_fused_call(monkeypatch):
    m = digits()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    _train_steps(m, opt)
    masks = prune_unstructured(m, "magnitude", 0.5)
    calls = []
    real = nptm.ops.apply_masks_
    monkeypatch.setattr(nptm.ops, "apply_masks_", lambda *a, **k: (calls.append((a, k)), real(*a, **k))[1])
    masks.apply(m, opt)
    assert len(calls) == 1
    (tensors, _), kw = calls[0]
    assert len(tensors) == 3 and len(kw["extra"]) == 2  # grads + momentum_buffer


def test_masks_accounting_and_state_dict():
    m = digits()
    masks = prune_unstructured(m, "magnitude", 0.9)
    total = sum(p.numel() for p in prunable_weights(m).values())
    assert masks.numel() == total
    assert masks.sparsity() == pytest.approx(1 - masks.nonzero() / total)
    assert masks.nonzero() == total - round(0.9 * total)
    per_layer = masks.per_layer_sparsity()
    assert per_layer.keys() == set(masks)
    assert per_layer["features.0.weight"] == pytest.approx(1 - int(masks["features.0.weight"].sum()) / 144)
    buf = io.BytesIO()
    torch.save(masks.state_dict(), buf)
    buf.seek(0)
    loaded = Masks.from_state_dict(torch.load(buf, weights_only=True))
    assert list(loaded) == list(masks) and all(torch.equal(loaded[n], masks[n]) and loaded[n].dtype == torch.bool for n in masks)
    ones = Masks.ones(prunable_weights(m))
    assert ones.sparsity() == 0 and ones.nonzero() == total

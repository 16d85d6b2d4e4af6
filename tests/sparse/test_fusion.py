"""Fusion and folding are exact (issue 25): each model here was computed wrongly (or not at all) by an earlier
``sparsify``; now it equals the masked dense model at batch 1, 3 and channels_last, and the rewrites still happen
where they are exact."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from nptm.sparse import SparseConv2d, SparseLinear, sparsify

TOL = 1e-4


def masked(model, seed=0, density=0.3):
    """The model with about ``density`` of each conv/linear weight kept, and those masks."""
    gen = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(p.shape, generator=gen) < density for n, p in model.named_parameters() if n.endswith("weight") and p.dim() in (2, 4)}
    dense = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in dense.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return dense, masks


def same_function(model, shape=(3, 8, 8)):
    """sparsify(model) from a batch-1 example, compared with the masked dense model; returns the sparse model."""
    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0)
    dense, masks = masked(model)
    gen = torch.Generator().manual_seed(1)
    x1, x3 = torch.randn(1, *shape, generator=gen), torch.randn(3, *shape, generator=gen)
    sparse = sparsify(model, x1, masks, batch_sizes=(), measure=False)
    with torch.no_grad():
        for x in (x1, x3, x3.contiguous(memory_format=torch.channels_last)):
            want, got = dense(x.clone()), sparse(x.clone())  # the models write to their inputs
            assert got.shape == want.shape
            assert (got - want).abs().max() <= TOL * want.abs().max(), (got - want).abs().max() / want.abs().max()
    return sparse


def sparse_calls(sparse):
    """The sparse conv/linear calls of a traced result: (module, number of arguments)."""
    mods = dict(sparse.named_modules())
    return [(mods[n.target], len(n.args)) for n in sparse.graph.nodes
            if n.op == "call_module" and isinstance(mods[n.target], (SparseConv2d, SparseLinear))]


class Block(nn.Module):
    def __init__(self, fn, c=3, **extra):
        super().__init__()
        self.fn, self.conv, self.conv2 = fn, nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)
        for k, v in extra.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def test_broadcast_residual_is_not_fused():
    """``conv(x) + pos`` with pos (1, C, H, W) matches the conv's shape at batch 1 only."""
    sparse = same_function(Block(lambda m, x: (m.conv(x) + m.pos).relu(), pos=nn.Parameter(torch.randn(1, 3, 8, 8))))
    assert [n for _, n in sparse_calls(sparse)] == [1]
    # the same residual expanded to the batch has the full shape at every batch size: fused
    sparse = same_function(Block(lambda m, x: m.conv(x) + m.pos.expand(x.shape[0], -1, -1, -1), pos=nn.Parameter(torch.randn(1, 3, 8, 8))))
    assert [n for _, n in sparse_calls(sparse)] == [2]


def test_inplace_relu_between_conv_and_add():
    """ReLU(inplace=True) writes the conv's input after the conv read it: fusing would move the conv after it."""
    same_function(Block(lambda m, x: (lambda y: y + m.act(x))(m.conv(x)), act=nn.ReLU(inplace=True)))
    same_function(Block(lambda m, x: (lambda y: (x.mul_(0.5), (y + x).relu())[1])(m.conv(x))))


def test_inplace_add_into_the_other_operand():
    """``other.add_(conv(x))`` and ``other += conv(x)`` write ``other``, which the model reads afterwards."""
    def add_(m, x):
        o = m.conv2(x)
        o.add_(m.conv(x))
        return o.relu()

    def iadd_alias(m, x):
        a = m.ident(x)  # the same tensor as x
        a += m.conv(x)
        return x * 0.5

    same_function(Block(add_))
    same_function(Block(iadd_alias, ident=nn.Identity()))


def test_inplace_add_on_the_conv_output_is_fused():
    def iadd(m, x):
        y = m.conv(x)
        y += x
        return F.relu(y, inplace=True)

    sparse = same_function(Block(iadd))
    assert [n for _, n in sparse_calls(sparse)] == [2] and sparse.conv.clamp_min == 0.0


def test_reread_head_weight():
    """``F.linear(h, self.fc.weight.t())`` after ``fc`` turned sparse; also when fx cannot trace the model."""
    class Head(nn.Module):
        def __init__(self, traceable=True):
            super().__init__()
            self.conv, self.fc, self.traceable = nn.Conv2d(3, 8, 3), nn.Linear(8, 5), traceable

        def forward(self, x):
            h = self.fc(self.conv(x).mean((2, 3)))
            if not self.traceable and h.sum() > 1e9:  # data-dependent: torch.fx cannot trace it
                h = h * 0
            return F.linear(h, self.fc.weight.t()) + self.fc.weight.shape[0]

    sparse = same_function(Head())
    assert isinstance(sparse.fc, SparseLinear)  # fc runs sparse; the graph reads the dense weight it kept
    sparse = same_function(Head(traceable=False))
    assert isinstance(sparse.conv, SparseConv2d) and type(sparse.fc) is nn.Linear
    assert "read outside" in next(c.reason for c in sparse.sparse_layers if c.name == "fc")


def test_tied_weights():
    """Two convs and two linears sharing weights, one conv followed by a BatchNorm (folded into a copy)."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
            self.b.weight = self.a.weight
            self.fc, self.g = nn.Linear(3, 3), nn.Linear(3, 3, bias=False)
            self.g.weight = self.fc.weight

        def forward(self, x):
            y = self.bn(self.a(x)).relu() + self.b(x)
            h = y.mean((2, 3))
            return self.fc(h) + self.g(h.relu()) + F.conv2d(x, self.a.weight, padding=1).mean((2, 3))

    sparse = same_function(Tied())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sparse.modules())
    assert all(isinstance(getattr(sparse, n), (SparseConv2d, SparseLinear)) for n in ("a", "b", "fc", "g"))


def test_batchnorm_fold_refused_where_not_exact():
    """A BatchNorm whose weight is written between the conv and itself stays a BatchNorm; one after a conv whose
    weight is read again is folded into a copy."""
    def written(m, x):
        y = m.conv(x)
        m.bn.weight.mul_(1.0)  # (fx does not record writes to buffers: they run once, while tracing)
        return m.bn(y)

    sparse = same_function(Block(written, bn=nn.BatchNorm2d(3)))
    assert isinstance(sparse.bn, nn.BatchNorm2d)
    sparse = same_function(Block(lambda m, x: m.bn(m.conv(x)) + F.conv2d(x, m.conv.weight, m.conv.bias, padding=1), bn=nn.BatchNorm2d(3)))
    assert not hasattr(sparse, "bn")


@pytest.mark.parametrize("op", ["+=", "-=", "*=", "/=", "%="])
def test_augmented_assignment_on_an_alias(op):
    """fx records ``a op= y`` as ``a op y``; on a tensor Python writes ``a`` in place, here a view of ``x``. The
    trace writes it in place too (``%=``: no trace, the per-layer path)."""
    def block(m, x):
        a = x[:, :2]
        y = m.conv(x)[:, :2] * 0.1 + 1.5
        if op == "+=":
            a += y
        elif op == "-=":
            a -= y
        elif op == "*=":
            a *= y
        elif op == "/=":
            a /= y
        else:
            a %= y
        return m.conv2(x.relu())

    sparse = same_function(Block(block))
    assert isinstance(sparse, fx.GraphModule) == (op != "%=")
    assert isinstance(sparse.conv, SparseConv2d) and isinstance(sparse.conv2, SparseConv2d)


def test_what_each_node_writes():
    """In-place modules, functions with ``inplace=`` (by keyword or position), ``*_`` methods and functions and
    ``out=`` write; the rest do not (``out=``: anything, as an unknown function)."""
    from nptm.sparse.tracing import writes

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplace, self.plain = nn.ReLU(inplace=True), nn.ReLU()

        def forward(self, x):
            y = x + 1
            outs = [self.inplace(x), self.plain(x), F.relu(x, True), F.relu(x, inplace=False), F.hardtanh(x, -1.0, 1.0, True),
                    x.add_(1), x.add(1), torch.relu_(x), torch.relu(x), torch.add(x, 1, out=y), x.clamp_(0, 1)]
            return outs, y

    gm = fx.symbolic_trace(M())
    modules = dict(gm.named_modules())
    found = {n.name: writes(n, modules) for n in gm.graph.nodes if n.op not in ("placeholder", "output")}
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    assert found == {"add": [], "inplace": [x], "plain": [], "relu": [x], "relu_1": [], "hardtanh": [x], "add_": [x],
                     "add_1": [], "relu_": [x], "relu_2": [], "add_2": None, "clamp_": [x]}


def test_a_trace_that_computes_otherwise_is_not_used():
    """A write fx does not record (to a buffer, outside any traced value) runs once, while tracing: the trace
    then computes something else than the model, and ``trace`` returns None (the per-layer path)."""
    from nptm.sparse.tracing import trace

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls += 1
            return self.conv(x) * self.calls

    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        assert trace(Counter(), (x,), (x.repeat(2, 1, 1, 1),)) is None
        assert trace(Block(lambda m, x: m.conv(x) * 2), (x,), (x.repeat(2, 1, 1, 1),)) is not None

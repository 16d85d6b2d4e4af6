"""Random small float32 models for fuzzing ``sparsify``: ``random_net(seed)`` -> (model, batch-1 example, masks).

A model is a chain of blocks, each an ``Fn`` (its layers and a forward function traced by torch.fx), drawn from
a menu aimed at the graph rewrites: convs (grouped, depthwise, strided, dilated, rectangular, "same"/"valid"/
reflect padding, with or without bias), BatchNorm after a conv or alone, activations (modules, functions,
methods, in place or not, fusable clamps and others), residual adds of every form (``+``, ``torch.add``,
``Tensor.add``, ``y += r``, ``y.add_(r)``, ``r += conv(x)`` with ``r`` aliased, ``r.add_(conv(x))``),
broadcast adds (``conv(x) + pos`` with ``pos`` of batch 1, per-channel), in-place writes between a conv and its
add, tied and shared layers, a weight read again by ``F.conv2d`` / ``F.linear``, Linear on 3-D tokens, pooling,
and now and then data-dependent control flow (not traceable: the per-layer path). ``masks``: a random mask
per conv/linear weight, mostly of high sparsity (empty and full ones too).
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn


class Fn(nn.Module):
    def __init__(self, fn, **layers):
        super().__init__()
        self.fn = fn
        for k, v in layers.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


class Net(nn.Module):
    def __init__(self, blocks, head):
        super().__init__()
        self.blocks, self.head = nn.ModuleList(blocks), head

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


class State:
    """The running tensor: ``img`` (N C H W) or ``tok`` (N L C); ``c`` channels, ``h`` x ``w`` pixels."""

    def __init__(self, c, h, w):
        self.layout, self.c, self.h, self.w = "img", c, h, w


def act_module(r):
    return r.choice([lambda: nn.ReLU(), lambda: nn.ReLU(inplace=True), lambda: nn.ReLU6(), lambda: nn.ReLU6(inplace=True),
                     lambda: nn.Hardtanh(-0.5, 0.7), lambda: nn.Hardtanh(0.0, 2.0, inplace=True), lambda: nn.GELU(),
                     lambda: nn.LeakyReLU(0.1), lambda: nn.SiLU(), lambda: nn.Identity(), lambda: nn.Dropout(0.5)])()


ACT_FNS = [F.relu, lambda x: F.relu(x, inplace=True), torch.relu, lambda x: x.relu(), lambda x: x.relu_(), F.relu6,
           lambda x: x.clamp(-1.0, 1.0), lambda x: torch.clamp(x, min=0.0), lambda x: x.clamp(max=0.5), lambda x: x.clamp_(0.0, 6.0),
           lambda x: F.hardtanh(x, -2.0, 2.0), lambda x: F.relu(x, True), F.gelu, torch.tanh, lambda x: x.clamp(min=-0.1).sigmoid()]


def act(r):
    """An activation as a function of (block, tensor); in place or not."""
    if r.random() < 0.5:
        f = r.choice(ACT_FNS)
        return (lambda m, x: f(x)), {}
    return (lambda m, x: m.act(x)), {"act": act_module(r)}


def conv(r, st, c_out=None, keep_size=False, groups=None):
    """A Conv2d from ``st`` (updated to its output); ``keep_size``: stride 1 and output of the input's size."""
    c = st.c
    c_out = c_out or r.choice([c, 4, 6, 8, 12, 16])
    k = r.choice([1, 3, 3, (1, 3), (3, 1), 5]) if min(st.h, st.w) >= 5 else r.choice([1, 3, (1, 3)])
    kh, kw = (k, k) if isinstance(k, int) else k
    dil = r.choice([1, 1, 2]) if max(kh, kw) > 1 and min(st.h, st.w) >= 6 else 1
    stride = 1 if keep_size else r.choice([1, 1, 2, (1, 2)]) if min(st.h, st.w) >= 4 else 1
    same = (dil * (kh - 1) // 2, dil * (kw - 1) // 2)
    if keep_size:
        pad = "same" if r.random() < 0.3 else same
    else:
        pad = r.choice([same, same, 0, "valid", 1]) if stride == 1 else r.choice([same, 0, 1])
        if pad == "valid" or pad == 0:
            pad = pad if st.h > dil * (kh - 1) and st.w > dil * (kw - 1) else same
    g = groups or 1
    if groups is None and r.random() < 0.35:
        opts = [g for g in (2, 3, 4) if c % g == 0 and c_out % g == 0] + ([c] if c_out == c else [])
        g = r.choice(opts) if opts else 1
    mode = "reflect" if r.random() < 0.05 and pad != "valid" and pad != 0 and st.h > 4 and st.w > 4 else "zeros"
    m = nn.Conv2d(c, c_out, k, stride, padding=pad, dilation=dil, groups=g, bias=r.random() < 0.6, padding_mode=mode)
    with torch.no_grad():  # the output's size
        try:
            st.c, st.h, st.w = m(torch.zeros(1, c, st.h, st.w)).shape[1:]
        except RuntimeError:  # the padded input is smaller than the dilated kernel
            m = nn.Conv2d(c, c_out, k, 1, padding=same, dilation=dil, groups=g, bias=m.bias is not None)
            st.c, st.h, st.w = m(torch.zeros(1, c, st.h, st.w)).shape[1:]
    return m


def bn(c):
    b = nn.BatchNorm2d(c)
    with torch.no_grad():
        b.running_mean.uniform_(-0.3, 0.3), b.running_var.uniform_(0.5, 2.0), b.weight.uniform_(0.5, 1.5), b.bias.uniform_(-0.2, 0.2)
    return b


def b_conv(r, st):
    if st.layout == "tok":
        return b_linear(r, st)
    c = conv(r, st)
    if r.random() < 0.4:
        return Fn(lambda m, x: m.c(x), c=c)
    f, extra = act(r)
    if r.random() < 0.5:
        return Fn(lambda m, x: f(m, m.bn(m.c(x))), c=c, bn=bn(st.c), **extra)
    return Fn(lambda m, x: f(m, m.c(x)), c=c, **extra)


def b_act(r, st):
    f, extra = act(r)
    return Fn(f, **extra)


RESIDUALS = {
    "x + conv": lambda m, x: x + m.c(x),
    "conv + x": lambda m, x: m.c(x) + x,
    "torch.add": lambda m, x: torch.add(m.c(x), x),
    "Tensor.add": lambda m, x: m.c(x).add(x),
    "y += x": lambda m, x: _iadd(m.c(x), x),
    "y.add_(x)": lambda m, x: m.c(x).add_(x),
    "bn(conv) += x": lambda m, x: _iadd(m.bn(m.c(x)), x),
    "x += conv (returns x)": lambda m, x: _iadd_alias(x, m.c(x)),
    "x.add_(conv)": lambda m, x: x.add_(m.c(x)),
    "alias += conv": lambda m, x: _alias_add(m, x),
    "pos broadcast": lambda m, x: m.c(x) + m.pos,
    "pos += broadcast": lambda m, x: _iadd(m.c(x), m.pos),
    "per-channel": lambda m, x: m.c(x) + m.chan,
    "relu_ between": lambda m, x: (lambda y: y + F.relu(x, inplace=True))(m.c(x)),
    "module relu_ between": lambda m, x: (lambda y: y + m.inplace(x))(m.c(x)),
    "mul_ between": lambda m, x: (lambda y: (x.mul_(0.5), y + x)[1])(m.c(x)),
    "two convs": lambda m, x: m.c(x) + m.d(x),
    "conv + reread": lambda m, x: m.c(x) + F.conv2d(x, m.c.weight, None, 1, m.c.padding, m.c.dilation, m.c.groups),
    "expanded pos": lambda m, x: m.c(x) + m.pos.expand(x.shape[0], -1, -1, -1),
    "alpha": lambda m, x: torch.add(m.c(x), x, alpha=0.5),
    "float64 residual": lambda m, x: (m.c(x) + x.double()).float(),
}


def _iadd(y, r):
    y += r
    return y


def _iadd_alias(x, y):
    a = x
    a += y  # writes x too
    return x


def _alias_add(m, x):
    a = m.ident(x)  # nn.Identity: the same tensor
    a += m.c(x)
    return x * 0.5 + a


def b_residual(r, st):
    if st.layout == "tok":
        return b_token_residual(r, st)
    c_in, h, w = st.c, st.h, st.w
    kind = r.choice(list(RESIDUALS))
    c = conv(r, st, c_out=c_in, keep_size=True)
    layers = {"c": c}
    if kind == "bn(conv) += x":
        layers["bn"] = bn(c_in)
    if kind in ("pos broadcast", "pos += broadcast", "expanded pos"):
        layers["pos"] = nn.Parameter(torch.randn(1, c_in, h, w) * 0.5)
    if kind == "per-channel":
        layers["chan"] = nn.Parameter(torch.randn(c_in, 1, 1))
    if kind == "module relu_ between":
        layers["inplace"] = nn.ReLU(inplace=True)
    if kind == "alias += conv":
        layers["ident"] = nn.Identity()
    if kind == "two convs":
        layers["d"] = conv(r, State(c_in, h, w), c_out=c_in, keep_size=True)
    add = RESIDUALS[kind]
    if r.random() < 0.6:
        f, extra = act(r)
        block = Fn(lambda m, x: f(m, add(m, x)), **layers, **extra)
    else:
        block = Fn(add, **layers)
    block.kind = kind  # (to read a failing seed)
    return block


def b_tied(r, st):
    if st.layout == "tok":
        return b_linear(r, st)
    a = conv(r, st, c_out=st.c, keep_size=True)
    kind = r.choice(["tied_add", "tied_chain", "shared_twice"])
    if kind == "shared_twice":
        return Fn(lambda m, x: m.a(m.a(x).relu()), a=a)
    b = nn.Conv2d(a.in_channels, a.out_channels, a.kernel_size, 1, a.padding, a.dilation, a.groups, bias=a.bias is not None)
    b.weight = a.weight
    if kind == "tied_add":
        return Fn(lambda m, x: m.a(x) + m.b(x.relu()), a=a, b=b)
    return Fn(lambda m, x: m.b(m.a(x).relu()), a=a, b=b)


def b_pool(r, st):
    if st.layout == "tok" or min(st.h, st.w) < 2:
        return b_act(r, st)
    st.h, st.w = st.h // 2, st.w // 2
    if r.random() < 0.5:
        return Fn(lambda m, x: F.max_pool2d(x, 2))
    return Fn(lambda m, x: m.p(x), p=nn.AvgPool2d(2))


def b_bn(r, st):
    if st.layout == "tok":
        return Fn(lambda m, x: m.n(x), n=nn.LayerNorm(st.c))
    return Fn(lambda m, x: m.n(x), n=bn(st.c))


def b_between(r, st):
    """A write between a conv (with BatchNorm) and its user."""
    if st.layout == "tok":
        return b_linear(r, st)
    c = conv(r, st, keep_size=True)
    if r.random() < 0.5:
        return Fn(lambda m, x: (lambda y: (x.relu_(), m.bn(y) * 0.5 + x.mean())[1])(m.c(x)), c=c, bn=bn(st.c))
    return Fn(lambda m, x: (lambda y: (m.bn.weight.mul_(1.0), m.bn(y).relu())[1])(m.c(x)), c=c, bn=bn(st.c))


def b_tokens(r, st):
    """To tokens (N, HW, C) or back to an image."""
    c, h, w = st.c, st.h, st.w
    if st.layout == "img":
        st.layout = "tok"
        return Fn(lambda m, x: x.flatten(2).transpose(1, 2))
    st.layout = "img"
    return Fn(lambda m, x: x.transpose(1, 2).reshape(x.shape[0], c, h, w))


def b_linear(r, st):
    if st.layout == "img":
        return b_tokens(r, st)
    c2 = r.choice([st.c, 4, 8, 12])
    lin = nn.Linear(st.c, c2, bias=r.random() < 0.7)
    st.c = c2
    f, extra = act(r)
    return Fn(lambda m, x: f(m, m.lin(x)), lin=lin, **extra)


def b_token_residual(r, st):
    lin = nn.Linear(st.c, st.c)
    if r.random() < 0.5:
        return Fn(lambda m, x: x + m.lin(x).relu(), lin=lin)
    return Fn(lambda m, x: _iadd(m.lin(x), x), lin=lin)


def b_untraceable(r, st):
    return Fn(lambda m, x: x * 2 if x.sum() > 0 else x - 1)


MENU = [b_conv, b_conv, b_conv, b_act, b_residual, b_residual, b_residual, b_tied, b_pool, b_bn, b_between, b_tokens,
        b_linear, b_linear]


def head(r, st):
    """The classifier: pooled features -> Linear (BatchNorm1d, a re-read or tied weight), or the tensor itself."""
    pool = (lambda x: x.mean((2, 3))) if st.layout == "img" else (lambda x: x.mean(1))
    c, kind = st.c, r.choice(["plain", "bn1d", "reread", "tied", "none"])
    fc = nn.Linear(c, 6)
    if kind == "bn1d":
        n = nn.BatchNorm1d(6)
        with torch.no_grad():
            n.running_mean.uniform_(-0.3, 0.3), n.running_var.uniform_(0.5, 2.0)
        return Fn(lambda m, x: m.n(m.fc(pool(x))).relu(), fc=fc, n=n)
    if kind == "reread":
        return Fn(lambda m, x: F.linear(m.fc(pool(x)), m.fc.weight.t()), fc=fc)
    if kind == "tied":
        g = nn.Linear(c, 6, bias=False)
        g.weight = fc.weight
        return Fn(lambda m, x: m.fc(pool(x)) + m.g(pool(x).relu()), fc=fc, g=g)
    if kind == "none":
        return nn.Identity()
    return Fn(lambda m, x: m.fc(pool(x)), fc=fc)


def random_masks(r, model, gen):
    """A bool mask per conv/linear weight: mostly 80-99% pruned, sometimes empty or full."""
    masks = {}
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() in (2, 4):
            density = r.choice([0.0, 0.01, 0.03, 0.05, 0.1, 0.1, 0.2, 0.2, 0.3, 0.5, 1.0])
            masks[name] = torch.rand(p.shape, generator=gen) < density
    return masks


def random_net(seed: int, max_blocks: int = 6):
    """The model (float32, eval, deterministic in ``seed``), a batch-1 example and random masks."""
    r = random.Random(seed)
    torch.manual_seed(seed)
    c0, h, w = r.choice([3, 4]), r.choice([6, 8, 9]), r.choice([6, 8, 7])
    st = State(c0, h, w)
    blocks = [b_conv(r, st)]
    for _ in range(r.randint(1, max_blocks)):
        blocks.append(r.choice(MENU)(r, st))
    if r.random() < 0.03:
        blocks.insert(r.randrange(len(blocks) + 1), b_untraceable(r, st))
    model = Net(blocks, head(r, st)).eval()
    gen = torch.Generator().manual_seed(seed)
    return model, torch.randn(1, c0, h, w, generator=gen), random_masks(r, model, gen)

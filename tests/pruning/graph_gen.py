"""Random small models for fuzzing the structured engine: ``random_net(seed)`` -> (model, example input, mixes).

A model is a chain of blocks, each an ``Fn`` (its sub-layers and a forward function traced by torch.fx), drawn
from a layout-aware menu: convs (grouped, depthwise, dilated, strided, 1-D/2-D), linears on flat and channels-last
tensors, BN/GN/LN (affine or not, module or functional), activations, pooling, residual adds, SE multiplies,
concat/split/chunk, permute, reshape/flatten/view, indexing with slices/``...``/``None``, tied weights and shared
layers, functional ops the engine does not know, attention. ``mixes``: a LayerNorm with weights normalises over
pruned channels (the pruned model then matches the zeroed reference only in shapes).
"""
from __future__ import annotations

import math
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
    """The running tensor: layout cf (N C *S), cl (N H W C), seq (N L C) or flat (N C); ``c`` channels, ``s`` sizes."""

    def __init__(self, layout, c, s):
        self.layout, self.c, self.s = layout, c, list(s)
        self.mixes = False

    @property
    def cdim(self):
        return 1 if self.layout in ("cf", "flat") else -1


ACTS = [lambda: nn.ReLU(), lambda: nn.GELU(), lambda: nn.Sigmoid(), lambda: nn.Hardswish(), lambda: nn.LeakyReLU(0.1)]
FACTS = [F.relu, torch.sigmoid, F.silu, torch.tanh, F.gelu]


def conv(r: random.Random, st: State, c_out=None, stride=None, groups=None):
    d, c = len(st.s), st.c
    k = r.choice([1, 3]) if d else 1
    dil = r.choice([1, 1, 2]) if k == 3 and min(st.s) > 4 else 1
    s = stride if stride is not None else r.choice([1, 1, 2]) if min(st.s) >= 4 else 1
    c_out = c_out or r.choice([c, 4, 6, 8, 12])
    g = groups or 1
    if groups is None and r.random() < 0.3:
        opts = [g for g in (2, 3, 4) if c % g == 0 and c_out % g == 0] + ([c] if c_out == c else [])
        g = r.choice(opts) if opts else 1
    m = (nn.Conv1d, nn.Conv2d)[d - 1](c, c_out, k, s, padding=dil * (k - 1) // 2, dilation=dil, groups=g)
    st.c, st.s = c_out, [(n - 1) // s + 1 for n in st.s]
    return m


def b_conv(r, st):
    if st.layout != "cf":
        return b_linear(r, st)
    return Fn(lambda m, x: m.conv(x), conv=conv(r, st))


def b_norm(r, st):
    c = st.c
    if st.layout == "cf":
        kind = r.choice(["bn", "bn_na", "fbn", "gn", "fgn"])
        bn = (nn.BatchNorm1d, nn.BatchNorm2d)[len(st.s) - 1]
        if kind in ("bn", "bn_na"):
            return Fn(lambda m, x: m.n(x), n=bn(c, affine=kind == "bn"))
        if kind == "fbn":
            return Fn(lambda m, x: F.batch_norm(x, m.rm, m.rv, m.w, m.b), rm=nn.Buffer(torch.rand(c)),
                      rv=nn.Buffer(torch.rand(c) + 0.5), w=nn.Parameter(torch.rand(c)), b=nn.Parameter(torch.rand(c)))
        g = r.choice([g for g in (1, 2, c) if c % g == 0])
        if kind == "gn":
            return Fn(lambda m, x: m.n(x), n=nn.GroupNorm(g, c, affine=r.random() < 0.5))
        return Fn(lambda m, x: F.group_norm(x, g))
    if st.layout == "flat":
        return Fn(lambda m, x: m.n(x), n=nn.BatchNorm1d(c))
    kind = r.choice(["ln", "ln_na", "fln", "fln_shape"])
    if kind == "ln":
        st.mixes = True
        return Fn(lambda m, x: m.n(x), n=nn.LayerNorm(c))
    if kind == "ln_na":
        return Fn(lambda m, x: m.n(x), n=nn.LayerNorm(c, elementwise_affine=False))
    if kind == "fln":
        return Fn(lambda m, x: F.layer_norm(x, (c,), m.w), w=nn.Parameter(torch.rand(c) + 0.5))
    return Fn(lambda m, x: F.layer_norm(x, x.shape[-1:]))


def b_act(r, st):
    if r.random() < 0.5:
        return Fn(lambda m, x: m.a(x), a=r.choice(ACTS)())
    f = r.choice(FACTS)
    return Fn(lambda m, x: f(x))


def b_pool(r, st):
    if st.layout != "cf" or min(st.s) < 2:
        return b_act(r, st)
    d = len(st.s)
    kind = r.choice(["max", "avg", "fmax"])
    st.s = [n // 2 for n in st.s]
    if kind == "fmax":
        return Fn(lambda m, x: (F.max_pool1d, F.max_pool2d)[d - 1](x, 2))
    return Fn(lambda m, x: m.p(x), p=[[nn.MaxPool1d, nn.MaxPool2d], [nn.AvgPool1d, nn.AvgPool2d]][kind == "avg"][d - 1](2))


def b_residual(r, st):
    if st.layout == "cf":
        inner = conv(r, st, c_out=st.c, stride=1)
        post = r.choice(ACTS)()
        return Fn(lambda m, x: m.post(x + m.inner(x)), inner=inner, post=post)
    return Fn(lambda m, x: x + m.lin(x), lin=nn.Linear(st.c, st.c))


def b_se(r, st):
    if st.layout != "cf" or len(st.s) != 2:
        return b_residual(r, st)
    c, mid = st.c, r.choice([2, 4])
    fc1, fc2 = nn.Linear(c, mid), nn.Linear(mid, c)
    if r.random() < 0.5:
        return Fn(lambda m, x: x * m.fc2(m.fc1(x.mean((2, 3))).relu()).sigmoid()[:, :, None, None], fc1=fc1, fc2=fc2)
    return Fn(lambda m, x: x * m.fc2(m.fc1(x.mean((-1, -2), keepdim=True).permute(0, 2, 3, 1)).relu())
              .sigmoid().permute(0, 3, 1, 2), fc1=fc1, fc2=fc2)


def b_cat(r, st):
    c = st.c
    if st.layout == "cf":
        side = conv(r, st, stride=1)
        st.c += c
        return Fn(lambda m, x: torch.cat([x, m.side(x)], 1), side=side)
    lin, c2 = nn.Linear(c, c + 2), c + 2
    st.c += c2
    return Fn(lambda m, x: torch.cat([m.lin(x), x], -1), lin=lin)


def b_split(r, st):
    c, dim = st.c, st.cdim
    if c % 2 or c < 4:
        return b_cat(r, st)
    kind = r.choice(["chunk_add", "chunk_swap", "split_cat", "tensor_split"])
    if kind == "chunk_add":
        st.c = c // 2
        return Fn(lambda m, x: (lambda p: p[0] * p[1].sigmoid() + p[0])(x.chunk(2, dim)))
    if kind == "chunk_swap":
        return Fn(lambda m, x: torch.cat(x.chunk(2, dim)[::-1], dim))
    if kind == "tensor_split":
        st.c = c // 2
        return Fn(lambda m, x: torch.tensor_split(x, 2, dim)[1])
    k = r.randint(1, c - 1)
    return Fn(lambda m, x: (lambda p: torch.cat([p[1], p[0].relu()], dim))(torch.split(x, [k, c - k], dim)))


def b_permute(r, st):
    if st.layout == "cf" and len(st.s) == 2:
        st.layout = "cl"
        return Fn(lambda m, x: x.permute(0, 2, 3, 1))
    if st.layout == "cl":
        st.layout = "cf"
        return Fn(lambda m, x: x.permute(0, 3, 1, 2)) if r.random() < 0.5 else Fn(lambda m, x: x.movedim(-1, 1))
    if st.layout == "cf":
        st.layout = "seq"
        return Fn(lambda m, x: x.transpose(1, 2))
    if st.layout == "seq":
        st.layout = "cf"
        return Fn(lambda m, x: x.transpose(-1, -2))
    return b_linear(r, st)


def b_linear(r, st):
    if st.layout == "cf":
        return b_conv(r, st)
    c2 = r.choice([st.c, 5, 8, 10])
    lin = nn.Linear(st.c, c2, bias=r.random() < 0.7)
    st.c = c2
    return Fn(lambda m, x: m.lin(x), lin=lin)


def b_reshape(r, st):
    c = st.c
    if st.layout == "cf" and len(st.s) == 2:
        kind = r.choice(["flatten2", "reshape", "view_literal", "flatten_all"])
        if kind == "flatten_all":
            st.layout, st.c, st.s = "flat", c * math.prod(st.s), []
            if r.random() < 0.5:
                return Fn(lambda m, x: m.f(x), f=nn.Flatten())
            return Fn(lambda m, x: x.contiguous().view(x.size(0), -1))
        st.s = [math.prod(st.s)]
        if kind == "flatten2":
            return Fn(lambda m, x: x.flatten(2))
        if kind == "reshape":
            return Fn(lambda m, x: x.reshape(x.shape[0], x.shape[1], -1))
        return Fn(lambda m, x: x.contiguous().view(-1, c, x.shape[-1] * x.shape[-2]))
    if st.layout == "cf":
        st.layout, st.c, st.s = "flat", c, []
        return Fn(lambda m, x: torch.flatten(F.adaptive_avg_pool1d(x, 1), 1))
    return b_act(r, st)


def b_index(r, st):
    lay = st.layout
    if lay == "cf" and len(st.s) == 2 and min(st.s) >= 2:
        kind = r.choice(["crop", "stride", "none_ell", "none_batch", "chan" if st.c > 1 else "crop"])
        if kind == "crop":
            st.s[0] -= 1
            return Fn(lambda m, x: x[:, :, 1:, :])
        if kind == "stride":
            st.s[1] = (st.s[1] + 1) // 2
            return Fn(lambda m, x: x[..., ::2])
        if kind == "none_ell":
            return Fn(lambda m, x: x[..., None][..., 0])
        if kind == "none_batch":
            return Fn(lambda m, x: x[:, None][:, 0])
        st.c = st.c - 1
        return Fn(lambda m, x: x[:, 1:])
    if lay in ("cl", "seq"):
        if r.random() < 0.5:
            return Fn(lambda m, x: x[..., None, :][..., 0, :])
        return Fn(lambda m, x: x[..., None].squeeze(-1))
    return b_act(r, st)


def b_tied(r, st):
    if st.layout != "cf":
        return b_residual(r, st)
    a = conv(r, st, c_out=st.c, stride=1)
    kind = r.choice(["tied_add", "tied_chain", "shared_twice"])
    if kind == "shared_twice":
        return Fn(lambda m, x: m.a(m.a(x).relu()), a=a)
    b = type(a)(a.in_channels, a.out_channels, a.kernel_size, 1, a.padding, a.dilation, a.groups)
    b.weight = a.weight
    if kind == "tied_add":
        return Fn(lambda m, x: m.a(x) + m.b(x.relu()), a=a, b=b)
    return Fn(lambda m, x: m.b(m.a(x).relu()), a=a, b=b)


def b_unknown(r, st):
    dim = st.cdim
    f = r.choice([lambda x: torch.flip(x, [dim]), lambda x: torch.cumsum(x, dim), lambda x: torch.roll(x, 1, dim),
                  lambda x: x.clamp(min=-1), lambda x: torch.cumsum(x, 0), lambda x: x.softmax(dim)])
    return Fn(lambda m, x: f(x))


def b_attention(r, st):
    if st.layout == "cf":
        return b_permute(r, st)
    if st.layout != "seq" and st.layout != "cl":
        return b_linear(r, st)
    c = st.c
    if st.layout == "seq" and r.random() < 0.3:
        h = r.choice([h for h in (1, 2) if c % h == 0])
        return Fn(lambda m, x: x + m.mha(x, x, x, need_weights=False)[0], mha=nn.MultiheadAttention(c, h, batch_first=True))
    d = r.choice([4, c])
    q, k, v, o = nn.Linear(c, d), nn.Linear(c, d), nn.Linear(c, d), nn.Linear(d, c)

    def attn(m, x):
        a = (m.q(x) @ m.k(x).transpose(-1, -2)) / math.sqrt(d)
        return x + m.o(a.softmax(-1) @ m.v(x))

    return Fn(attn, q=q, k=k, v=v, o=o)


def b_fold(r, st):
    """Channels folded into the batch (a per-channel shared conv) or the batch moved: refused."""
    if st.layout != "cf":
        return b_act(r, st)
    if r.random() < 0.5:
        return Fn(lambda m, x: x.transpose(0, 1).relu().transpose(0, 1))
    conv = (nn.Conv1d, nn.Conv2d)[len(st.s) - 1](1, 1, 1)
    return Fn(lambda m, x: m.conv(x.reshape(-1, 1, *x.shape[2:])).reshape(x.shape), conv=conv)


MENU = [b_conv, b_conv, b_norm, b_act, b_pool, b_residual, b_se, b_cat, b_split, b_permute, b_linear, b_reshape,
        b_index, b_tied, b_unknown, b_attention, b_fold]


def random_net(seed: int, max_blocks: int = 7):
    """The model (float64, eval, deterministic in ``seed``), an example input and whether channels are mixed."""
    r = random.Random(seed)
    torch.manual_seed(seed)
    start = r.choice(["cf2", "cf2", "cf1", "flat"])
    c0 = r.choice([3, 4])
    st = State("flat", c0, []) if start == "flat" else State("cf", c0, [8, 8] if start == "cf2" else [16])
    blocks = [b_conv(r, st) if start != "flat" else b_linear(r, st)]
    for _ in range(r.randint(1, max_blocks)):
        blocks.append(r.choice(MENU)(r, st))
    if st.layout == "flat" or r.random() < 0.6:
        pool = {"cf": lambda x: x.flatten(2).mean(-1), "cl": lambda x: x.mean((1, 2)), "seq": lambda x: x.mean(1),
                "flat": lambda x: x}[st.layout]
        head = Fn(lambda m, x: m.fc(pool(x)), fc=nn.Linear(st.c, 5))
    else:
        head = nn.Identity()
    model = Net(blocks, head).double().eval()
    shape = (2, c0, *((8, 8) if start == "cf2" else (16,) if start == "cf1" else ()))
    with torch.no_grad():  # random BN statistics
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)), st.mixes

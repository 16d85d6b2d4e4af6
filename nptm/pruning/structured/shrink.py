"""Physical removal of channels: every sliced parameter and buffer in one ``nptm.ops.gather_channels`` call."""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from nptm import ops
from nptm.pruning.structured.graph import ChannelGraph, TensorSlice, canonical_names


def _check_keep(graph: ChannelGraph, keep: Mapping[str, Tensor]) -> dict[int, Tensor]:
    """Group id -> validated sorted kept indices (groups that keep everything are left out)."""
    by_name = {g.name: g for g in graph.groups}
    out = {}
    for name, idx in keep.items():
        g = by_name.get(name)
        if g is None:
            raise ValueError(f"{name!r} is not a channel group; groups: {', '.join(list(by_name)[:8])}, ...")
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu().sort().values
        if idx.numel() == 0 or bool((idx < 0).any() | (idx >= g.size).any()) or idx.unique().numel() != idx.numel():
            raise ValueError(f"kept channels of {name} must be distinct indices in [0, {g.size}), at least one")
        if idx.numel() == g.size:
            continue
        if not g.prunable:
            raise ValueError(f"cannot prune group {name}: its channels are kept whole ({g.reason})")
        counts = torch.bincount(idx // (g.size // g.blocks), minlength=g.blocks)
        if bool((counts != counts[0]).any()):
            raise ValueError(f"group {name} feeds a grouped conv: keep the same number of channels in each of its {g.blocks} blocks")
        out[g.id] = idx
    return out


def _positions(s: TensorSlice, graph: ChannelGraph, kept: dict[int, Tensor]) -> Tensor | None:
    """Kept positions along ``s.dim`` (None: nothing removed)."""
    parts, pos, changed = [], 0, False
    for gid, start, n in s.label.segs:
        idx = kept.get(graph.uf.find(gid))
        if idx is None:
            parts.append(torch.arange(pos, pos + n))
        else:
            sel = idx[(idx >= start) & (idx < start + n)]
            parts.append(sel - start + pos)
            changed |= sel.numel() < n
        pos += n
    if not changed:
        return None
    ch = torch.cat(parts)
    inner = s.label.inner
    return (ch[:, None] * inner + torch.arange(inner)).reshape(-1) if inner > 1 else ch


def shrink_graph(model: nn.Module, graph: ChannelGraph, keep: Mapping[str, Tensor]) -> nn.Module:
    kept = _check_keep(graph, keep)
    new = copy.deepcopy(model)
    per_tensor: dict[str, dict[int, tuple[Tensor, int]]] = {}
    for s in graph.slices:
        idx = _positions(s, graph, kept)
        if idx is not None:
            per_tensor.setdefault(s.tensor, {})[s.dim] = (idx, s.conv_groups)
    triples, targets = [], []
    params = dict(new.named_parameters())
    with torch.no_grad():
        for name, dims in per_tensor.items():
            t = params[name] if name in params else new.get_buffer(name)
            triples.append(_gather_spec(t, dims))
            targets.append((name, _new_shape(t, dims)))
        results = ops.gather_channels([(t, d, i.to(t.device)) for t, d, i in triples])
    aliases: dict[str, list[str]] = {}  # tied weights: every name of a tensor gets the sliced one
    for alias, name in canonical_names(new).items():
        aliases.setdefault(name, []).append(alias)
    for (name, shape), t in zip(targets, results):
        t = t.reshape(shape)
        if name in params:
            t = nn.Parameter(t, requires_grad=params[name].requires_grad)
        for alias in aliases.get(name, [name]):
            _assign(new, alias, t)
    _fix_attributes(new)
    return new


def _gather_spec(t: Tensor, dims: dict[int, tuple[Tensor, int]]) -> tuple[Tensor, int, Tensor]:
    """One (tensor, dim, index) triple: both dims 0 and 1 become rows of a [O*I, rest] view."""
    if set(dims) == {0} or (set(dims) == {1} and dims[1][1] == 1):
        (d, (idx, _)), = dims.items()
        return t, d, idx
    o = dims[0][0] if 0 in dims else torch.arange(t.shape[0])
    i, g = dims.get(1, (None, 1))
    cols = t.shape[1]
    if i is None:
        rows = o[:, None] * cols + torch.arange(cols)
    elif g == 1:
        rows = o[:, None] * cols + i[None, :]
    else:  # grouped conv: output o (block o // (O/g)) sees its own block's kept inputs, as local positions
        local = i.reshape(g, -1) - torch.arange(g)[:, None] * cols
        rows = o[:, None] * cols + local[o // (t.shape[0] // g)]
    return t.reshape(t.shape[0] * cols, -1), 0, rows.reshape(-1)


def _new_shape(t: Tensor, dims: dict[int, tuple[Tensor, int]]) -> tuple[int, ...]:
    shape = list(t.shape)
    for d, (idx, g) in dims.items():
        shape[d] = idx.numel() // g
    return tuple(shape)


def _assign(model: nn.Module, name: str, t: Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    m = model.get_submodule(owner)
    if isinstance(t, nn.Parameter):
        setattr(m, attr, t)
    else:
        m._buffers[attr] = t


def _fix_attributes(model: nn.Module) -> None:
    """Bring every layer's size attributes in line with its (sliced) tensors."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            m.out_channels = m.weight.shape[0]
            if depthwise:
                m.groups = m.in_channels = m.out_channels
            else:
                m.in_channels = m.weight.shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            ref = m.weight if m.weight is not None else m.running_mean
            if ref is not None:
                m.num_features = ref.shape[0]
        elif isinstance(m, nn.LayerNorm) and m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)
        elif isinstance(m, nn.PReLU):
            m.num_parameters = m.weight.numel()

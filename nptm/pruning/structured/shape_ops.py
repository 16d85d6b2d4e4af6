"""Label rules of the ops that move, split, join or reshape the channel dimension (a mixin of the tracer's
propagator: ``self.uf`` is its union-find, ``self.label(node)`` a node's label)."""
from __future__ import annotations

import math

import torch.fx as fx

from nptm.pruning.structured.labels import Label


class UnsupportedModel(ValueError):
    """The engine cannot prune this model safely (the message names the layer)."""


def tensor_shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class ShapeOps:
    def cat(self, node: fx.Node, where: str) -> Label | None:
        tensors = node.args[0]
        out = tensor_shape(node)
        dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(out)
        if isinstance(tensors, fx.Node):  # a slice of a split's outputs
            labs = self.labels.get(tensors)
            labs = list(labs) if isinstance(labs, tuple) else [None]
        else:
            labs = [self.label(t) for t in tensors]
        if any(lab is None for lab in labs) or len({(lab.dim, lab.inner) for lab in labs}) != 1:
            self.fix_all(node.args, f"concatenated with unpruned channels in {where}")
            return None
        if labs[0].dim != dim:  # concatenated along another dimension: channels must agree
            y = labs[0]
            for lab in labs[1:]:
                y = y and self.uf.unify(y, lab, f"concatenated in {where}")
            return y
        return Label(dim, tuple(s for lab in labs for s in lab.segs), labs[0].inner)

    def split(self, node: fx.Node, x: Label, name: str, where: str):
        outs = node.meta["tensor_meta"]
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        dim %= len(outs[0].shape)
        if dim != x.dim:
            return tuple(x for _ in outs)
        sizes = {meta.shape[dim] for meta in outs}
        gid, whole = x.segs[0][0], len(x.segs) == 1 and x.segs[0][2] == self.uf.sizes[x.segs[0][0]]
        if x.inner != 1 or name in ("split", "split_with_sizes") or len(sizes) != 1 or not whole:  # literal sizes
            self.uf.fix_label(x, f"split into pieces that would not shrink alike in {where}")
            return tuple(None for _ in outs)
        self.uf.add_blocks(gid, len(outs))  # chunk / tensor_split(n): every piece keeps as many channels
        res, start = [], 0
        for meta in outs:
            res.append(x.sliced(start, meta.shape[dim]))
            start += meta.shape[dim]
        return tuple(res)

    def untracked_split(self, node: fx.Node):
        metas = node.meta.get("tensor_meta")
        return tuple(None for _ in metas) if isinstance(metas, (tuple, list)) else None

    def getitem(self, node: fx.Node, x: Label, in_shape, where: str) -> Label | None:
        idx = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if any(i is Ellipsis for i in idx):
            k = idx.index(Ellipsis)
            used = sum(i is not None and i is not Ellipsis for i in idx)
            idx = idx[:k] + (slice(None),) * (len(in_shape) - used) + idx[k + 1 :]
        d_in = d_out = 0
        for i in idx:
            if i is None:
                d_out += 1
                continue
            if d_in == x.dim:
                if isinstance(i, slice) and i == slice(None) and d_out > 0:
                    return x.moved(d_out)
                break
            if not isinstance(i, (int, slice)):
                break
            d_out += isinstance(i, slice)
            d_in += 1
        else:
            if d_out > 0:
                return x.moved(d_out + x.dim - d_in)
        self.uf.fix_label(x, f"indexed along channels in {where}")
        return None

    def reshape(self, node: fx.Node, x: Label, s, t, where: str) -> Label | None:
        if t[0] != s[0] or x.dim == 0:
            raise UnsupportedModel(f"cannot prune channels through {where}: the reshape moves channels into the batch dimension")
        sizes = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        d = x.dim
        if s[:d] == t[:d] and len(t) > d and (len(sizes) <= d or not _literal(sizes[d])):
            if t[d] == s[d]:
                return x
            k = next((k for k in range(d + 1, len(s) + 1) if math.prod(s[d:k]) == t[d]), None)
            if k is not None:
                return x.moved(d, x.inner * math.prod(s[d + 1 : k]))
        self.uf.fix_label(x, f"reshaped in {where}")
        return None

    def flatten(self, x: Label, s, start: int, end: int, where: str) -> Label | None:
        if x.dim < start:
            return x
        if x.dim > end:
            return x.moved(x.dim - (end - start))
        if start == 0:
            raise UnsupportedModel(f"cannot prune channels through {where}: it flattens channels into the batch dimension")
        if math.prod(s[start : x.dim]) != 1:
            self.uf.fix_label(x, f"flattened behind other dimensions in {where}")
            return None
        return x.moved(start, x.inner * math.prod(s[x.dim + 1 : end + 1]))

    def permute(self, node: fx.Node, x: Label, ndim: int, name: str, where: str) -> Label | None:
        args = list(node.args[1:]) or list(node.kwargs.values())
        if name == "transpose":
            a, b = (int(v) % ndim for v in args[:2])
            order = list(range(ndim))
            order[a], order[b] = b, a
        else:
            order = [int(v) % ndim for v in (args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args)]
        if order[0] != 0:
            raise UnsupportedModel(f"cannot prune channels through {where}: it moves the batch dimension")
        return x.moved(order.index(x.dim))

    def reduce(self, node: fx.Node, x: Label, ndim: int, where: str) -> Label | None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if dims is None:
            self.uf.fix_label(x, f"reduced over channels in {where}")
            return None
        dims = {int(d) % ndim for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        if x.dim in dims or 0 in dims:
            self.uf.fix_label(x, f"reduced over channels in {where}")
            return None
        return x if keep else x.moved(x.dim - sum(d < x.dim for d in dims))


    def layer_norm(self, node: fx.Node, x: Label, in_shape, where: str, module=None) -> Label | None:
        """A LayerNorm module with weights follows its channels (``normalized_shape`` is reset from the weight);
        one without, or ``F.layer_norm`` with a shape written in the graph, keeps its channels whole."""
        shape = module.normalized_shape if module is not None else node.args[1] if len(node.args) > 1 else None
        if not isinstance(shape, (tuple, list)) or not all(isinstance(v, int) for v in shape):
            self.uf.fix_label(x, f"normalised over a computed shape in {where}")
            return None
        if x.dim < len(in_shape) - len(shape):
            return x  # channels not normalised over
        params = [f"{where}.{a}" for a in ("weight", "bias") if getattr(module, a, None) is not None]
        if len(shape) != 1 or x.inner != 1:
            self.uf.fix_label(x, f"normalised together with other dimensions in {where}")
        elif module is None:
            self.uf.fix_label(x, f"normalised by {where}, whose normalized_shape is a literal")
        elif not params:
            self.uf.fix_label(x, f"normalised by {where}, which has no weight to size its normalized_shape")
        else:
            for p in params:
                self.add_slice(p, 0, x)
            return x
        return None


def _literal(v) -> bool:
    return isinstance(v, int) and v != -1


def flatten_range(node: fx.Node, ndim: int) -> tuple[int, int]:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start % ndim, end % ndim

"""Channel labels: which group channels a tensor dimension holds, and the union-find that couples them.

A label says that dimension ``dim`` of a tensor is the concatenation of ``segs`` — ``(gid, start, length)``
runs of a group's channels — each channel spread over ``inner`` consecutive positions (after a flatten).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    dim: int
    segs: tuple[tuple[int, int, int], ...]
    inner: int = 1

    @property
    def size(self) -> int:
        return sum(s[2] for s in self.segs) * self.inner

    def moved(self, dim: int, inner: int | None = None) -> Label:
        return Label(dim, self.segs, self.inner if inner is None else inner)

    def sliced(self, start: int, length: int) -> Label:
        """Channels ``start .. start+length`` of this label (in channel units)."""
        out, pos = [], 0
        for gid, s, n in self.segs:
            lo, hi = max(start, pos), min(start + length, pos + n)
            if lo < hi:
                out.append((gid, s + lo - pos, hi - lo))
            pos += n
        return Label(self.dim, tuple(out), self.inner)


class UnionFind:
    """Channel groups: sizes, 'fixed' reasons (never pruned), and block constraints from grouped convs."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.blocks: list[int] = []
        self.fixed: dict[int, str] = {}

    def new(self, size: int, blocks: int = 1) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        self.blocks.append(blocks)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if a > b:
            a, b = b, a
        self.parent[b] = a
        self.add_blocks(a, self.blocks[b])
        if b in self.fixed:
            self.fix(a, self.fixed.pop(b))

    def fix(self, g: int, reason: str) -> None:
        self.fixed.setdefault(self.find(g), reason)

    def add_blocks(self, g: int, blocks: int) -> None:
        g = self.find(g)
        b = math.lcm(self.blocks[g], blocks)
        if self.sizes[g] % b:
            self.fix(g, f"grouped convolutions with incompatible group counts ({self.blocks[g]} and {blocks})")
        else:
            self.blocks[g] = b

    def fix_label(self, label: Label | None, reason: str) -> None:
        if label is not None:
            for gid, _, _ in label.segs:
                self.fix(gid, reason)

    def unify(self, a: Label, b: Label, reason: str) -> Label | None:
        """Couple two labels of the same tensor positions channel by channel; None (both fixed) if they do not align."""
        ok = a.dim == b.dim and a.inner == b.inner and [s[2] for s in a.segs] == [s[2] for s in b.segs]
        if ok:
            for (ga, sa, n), (gb, sb, _) in zip(a.segs, b.segs):
                if self.find(ga) == self.find(gb) and sa == sb:
                    continue
                if not (sa == sb == 0 and self.sizes[ga] == self.sizes[gb] == n):
                    ok = False
                    break
        if not ok:
            self.fix_label(a, reason)
            self.fix_label(b, reason)
            return None
        for (ga, _, _), (gb, _, _) in zip(a.segs, b.segs):
            self.union(ga, gb)
        return a

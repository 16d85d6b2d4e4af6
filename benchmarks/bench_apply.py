"""Mask application: nptm.ops.apply_masks_ (bool masks, one fused pass) vs a per-tensor ``t.mul_(mask)``
loop and ``torch._foreach_mul_`` (both with float masks, as torch.nn.utils.prune stores them).

``apply_masks`` masks the weights only; ``apply_masks_step`` is the per-training-step work of keeping
pruned weights at zero: weights + gradients + 1 momentum buffer (``extra=``). There the torch prune
alternative is also timed: its forward pre-hooks recompute ``weight = weight_orig * weight_mask`` for
every pruned tensor on every forward (``prune_hooks_fwd``, with autograd recording as in training;
the backward then pays a second multiply for the gradient, which the end-to-end step includes).
"""
from __future__ import annotations

import torch
from torch import nn

import workloads as W
from harness import Case, Spec, Timed, pytest_bench

OPS = {
    "apply_masks": ("nptm", "mul_loop", "foreach_mul_"),
    "apply_masks_step": ("nptm", "mul_loop", "foreach_mul_", "prune_hooks_fwd"),
}


def specs(device: str, full: bool) -> list[Spec]:
    return [
        Spec(op, f"{name} {dt} s={s}", impls, (name, dt, s))
        for op, impls in OPS.items()
        for name in W.MODELS
        for dt in W.dtypes(device)
        for s in (W.SPARSITIES if full else (0.9,))
    ]


def build(spec: Spec, device: str) -> Case:
    from nptm import ops

    name, dt, s = spec.params
    step = spec.op == "apply_masks_step"
    ws = W.prunable_weights(name, device, dt)
    masks = W.magnitude_masks(ws, s)
    fmasks = [m.to(w.dtype) for w, m in zip(ws, masks)]
    extra = [[torch.randn_like(w) for w in ws] for _ in range(2)] if step else []  # grads, momentum
    ts = ws + [t for g in extra for t in g]
    fms = fmasks * (1 + len(extra))

    def mul_loop():
        for t, m in zip(ts, fms):
            t.mul_(m)

    timed = {
        "nptm": Timed(lambda: ops.apply_masks_(ws, masks, extra=extra)),
        "mul_loop": Timed(mul_loop),
        "foreach_mul_": Timed(lambda: torch._foreach_mul_(ts, fms)),
    }
    keep = [ws, masks, fmasks, extra]
    if step:
        params = [nn.Parameter(w.clone()) for w in ws]
        hooked = [(h, hook) for h in W.fresh_holders(params, masks) for hook in h._forward_pre_hooks.values()]

        def prune_hooks_fwd():
            for h, hook in hooked:
                hook(h, ())

        timed["prune_hooks_fwd"] = Timed(prune_hooks_fwd)
        keep += [params, hooked]
    n, b, m = sum(w.numel() for w in ws), ws[0].element_size(), 1
    floor = n * (2 * b * (1 + len(extra)) + m)  # N(2b + m); with grads + S=1 state: N(2b(2+S) + m)
    return Case(spec, device, timed, bytes=floor, keep=keep)


def test_apply_masks(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)

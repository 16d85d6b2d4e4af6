"""Global magnitude masks (MWP's global top-k): nptm vs torch.nn.utils.prune.global_unstructured,
torch.kthvalue and torch.topk on the concatenated |w|.

Every implementation returns per-tensor keep-masks. The kthvalue/topk baselines include the concat,
the abs and the mask construction; for a second IMP round the pruned entries get score -1 so that
pruning the (already pruned + new) smallest selects the same set. ``global_unstructured`` runs on
fresh modules each repetition (built, and for a second round pre-pruned with ``custom_from_mask``,
untimed in the setup): its timed call is what a user pays to prune once, i.e. the concat, the float
mask, the sorted int64 top-k, and its own ``weight = orig * mask`` + hook registration per tensor.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

import workloads as W
from harness import Case, Spec, Timed, pytest_bench

IMPLS = ("nptm", "prune.global_unstructured", "kthvalue", "topk")


def specs(device: str, full: bool) -> list[Spec]:
    out = []
    for name in W.MODELS:
        for dt in W.dtypes(device):
            for s in W.SPARSITIES:
                for prior in (None, W.PRIOR):
                    if prior is not None and s <= prior:
                        continue
                    if not full and s != 0.9:  # --quick: s=0.9 only (fresh and second round)
                        continue
                    workload = f"{name} {dt} s={s}" + (f" from {prior}" if prior else "")
                    out.append(Spec("global_magnitude_masks", workload, IMPLS, (name, dt, s, prior)))
    return out


def _scores(ws, prev):
    if prev is None:
        return torch.cat([w.abs().reshape(-1) for w in ws])
    return torch.cat([w.abs().reshape(-1).masked_fill(m.reshape(-1).logical_not(), -1) for w, m in zip(ws, prev)])


def _split(keep, ws):
    return [k.view(w.shape) for k, w in zip(keep.split([w.numel() for w in ws]), ws)]


def kthvalue_masks(ws, prev, k):
    flat = _scores(ws, prev)
    return _split(flat > flat.kthvalue(k).values, ws)


def topk_masks(ws, prev, k):
    flat = _scores(ws, prev)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[flat.topk(k, largest=False, sorted=False).indices] = False
    return _split(keep, ws)


def build(spec: Spec, device: str) -> Case:
    from nptm import ops

    name, dt, s, prior = spec.params
    ws = W.prunable_weights(name, device, dt)
    n = sum(w.numel() for w in ws)
    prev, amount, k = None, s, round(s * n)
    if prior is not None:
        prev = W.magnitude_masks(ws, prior)
        for w, m in zip(ws, prev):
            w.mul_(m)  # pruned weights are zero, as after a real round
        alive = int(sum(int(m.sum()) for m in prev))
        amount = 1 - (1 - s) / (1 - prior)  # IMP prunes a fraction of the alive weights
        k = (n - alive) + round(amount * alive)
    params = [nn.Parameter(w, requires_grad=False) for w in ws]

    def global_unstructured(mods):
        prune.global_unstructured([(h, "weight") for h in mods], prune.L1Unstructured, amount=amount)

    timed = {
        "nptm": Timed(lambda: ops.global_magnitude_masks(ws, amount, masks=prev)),
        "prune.global_unstructured": Timed(global_unstructured, setup=lambda: W.fresh_holders(params, prev)),
        "kthvalue": Timed(lambda: kthvalue_masks(ws, prev, k)),
        "topk": Timed(lambda: topk_masks(ws, prev, k)),
    }
    b, m = ws[0].element_size(), 1  # bool masks
    floor = n * b + n * m + (n * m if prev else 0)  # one read of w (+ old masks), one write of the masks
    return Case(spec, device, timed, bytes=floor, keep=[ws, prev, params])


def test_global_magnitude_masks(benchmark, device, spec, impl, budget):
    pytest_bench(benchmark, build, spec, device, impl, budget)

"""Taylor first-order importance (Molchanov et al., CVPR 2019): for each output channel S of a layer,
I_S = (sum_{s in S} g_s * w_s)^2 with g the gradient of the mean cross-entropy on one calibration batch,
averaged over the batches. The model runs in eval mode (BatchNorm uses and keeps its running statistics),
so scoring leaves the model and its buffers unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nptm.pruning.criteria.base import CRITERIA, Criterion, check_finite, eval_mode, require_batches


@CRITERIA.register("taylor", position=5)
class Taylor(Criterion):
    structured = True
    needs_data = True

    def scores(self, model, params, *, loader=None, generator=None):
        check_finite(params)
        names, weights = list(params), list(params.values())
        totals = [torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) for w in weights]
        batches = 0
        with eval_mode(model), torch.enable_grad():
            for x, y in require_batches(loader, self):
                loss = F.cross_entropy(model(x).float(), y)
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                for total, w, g in zip(totals, weights, grads):
                    if g is not None:
                        total += (g.double() * w.detach().double()).reshape(w.shape[0], -1).sum(1).square()
                batches += 1
        return {n: t / batches for n, t in zip(names, totals)}

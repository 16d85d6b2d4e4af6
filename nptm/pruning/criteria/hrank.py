"""HRank (Lin et al., CVPR 2020): the score of an output channel is the matrix rank of its H x W output
feature map (the producing layer's output), averaged over the calibration images; ranks in float64.
A linear layer's "map" is 1 x 1 (rank 1 where the output is non-zero). Runs in eval mode without gradients.
"""
from __future__ import annotations

import torch

from nptm.pruning.criteria.base import CRITERIA, Criterion, check_finite, eval_mode, owner_modules, require_batches


@CRITERIA.register("hrank", position=6)
class HRank(Criterion):
    structured = True
    needs_data = True

    @torch.no_grad()
    def scores(self, model, params, *, loader=None, generator=None):
        check_finite(params)
        modules = owner_modules(model, params)
        totals = {n: torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) for n, w in params.items()}
        images = [0]

        def hook(name):
            def add(module, inputs, out):
                maps = out.detach().double()
                maps = maps.reshape(*maps.shape[:2], 1, 1) if maps.dim() == 2 else maps.flatten(3)
                totals[name] += torch.linalg.matrix_rank(maps).double().sum(0)
            return add

        handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
        try:
            with eval_mode(model):
                for x, _ in require_batches(loader, self):
                    model(x)
                    images[0] += len(x)
        finally:
            for h in handles:
                h.remove()
        return {n: t / images[0] for n, t in totals.items()}

"""The one ``evaluate``: top-1/top-5 accuracy and mean loss of a model over a loader, summed over ranks."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nptm.train import distributed
from nptm.train.precision import autocast, resolve_precision


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None, tta_flip: bool = False, *,
             precision: str = "auto", label_smoothing: float = 0.0) -> dict[str, float]:
    """``{"top1", "top5", "loss", "count"}`` over ``loader`` (all ranks together under torchrun).

    ``tta_flip`` averages the logits of each image and its horizontal mirror (ffcv-imagenet's test-time
    flip); ``precision`` as ``--precision`` (auto: bf16 autocast on CUDA); ``device`` defaults to the
    model's. The loss is cross-entropy with ``label_smoothing``, computed in float32."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct top-1, correct top-5, count
    with autocast(device, precision):
        for x, y in loader:
            out = model(x).float()
            if tta_flip:
                out = (out + model(torch.flip(x, dims=[3])).float()) / 2
            top = out.topk(min(5, out.shape[1]), dim=1).indices == y[:, None]
            sums += torch.stack([F.cross_entropy(out, y, label_smoothing=label_smoothing, reduction="sum").double(),
                                 top[:, 0].sum().double(), top.any(dim=1).sum().double(), sums.new_tensor(len(y))])
    model.train(was_training)
    loss, correct1, correct5, count = distributed.all_reduce(sums).tolist()
    n = max(count, 1)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss / n, "count": int(count)}

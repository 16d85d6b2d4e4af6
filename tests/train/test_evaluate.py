"""The one evaluate: top-1/top-5, loss with label smoothing, test-time flip, precision."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nptm.train.evaluate import evaluate


class LeftRight(nn.Module):
    """Logits from the left and right halves' means: not mirror-invariant."""

    def forward(self, x):
        w = x.shape[-1] // 2
        left, right = x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))
        return torch.stack([left, right, 0.5 * left - right, torch.zeros_like(left)], 1)


@pytest.mark.parametrize("tta", [False, True])
def test_evaluate_sums_and_tta(tta):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 3, 4, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen)) for n in (5, 7, 3)]
    model = LeftRight()
    out = evaluate(model, batches, tta_flip=tta, label_smoothing=0.1)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    logits = model(x)
    if tta:
        logits = (logits + model(x.flip(-1))) / 2
    top = logits.topk(4, 1).indices
    assert out["count"] == 15
    assert out["top1"] == pytest.approx((top[:, 0] == y).float().mean().item())
    assert out["top5"] == 1.0  # 4 classes: every label is in the top 5
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)

import pytest
import torch
from torch import nn


@pytest.fixture
def randomize_bn():
    """Gives BN layers random affine parameters and running statistics (eval outputs then depend on all of them)."""

    def apply(model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 1.5)
        return model

    return apply

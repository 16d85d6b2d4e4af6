"""--model timm/NAME: any timm classification model, built untrained; pruned, trained and named in one-line errors
(timm's own tiny test models of four families: residual, inverted-residual, ConvNeXt and ViT)."""
import pytest
import torch

from nptm.models import build_model, check_model_name
from nptm.pruning import prunable_weights, prune_unstructured

FAMILIES = ["test_resnet", "test_efficientnet", "test_convnext", "test_vit"]


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_model_trains_pruned(name):
    torch.manual_seed(0)
    model = build_model(f"timm/{name}", 5)
    assert type(model).__module__.startswith("timm.") and model.num_classes == 5
    masks = prune_unstructured(model, "magnitude", 0.5, include_linear=True, spare_classifier=True)
    head = list(prunable_weights(model, include_linear=True))[-1]
    assert head not in masks and masks.sparsity() == pytest.approx(0.5, abs=1e-6)
    side = model.pretrained_cfg["input_size"][-1] if "vit" in name else 64  # ViTs take their own size only
    out = model.train()(torch.randn(2, 3, side, side))
    assert out.shape == (2, 5)
    out.sum().backward()
    masks.apply(model)
    assert all(int(model.get_parameter(n)[~m].count_nonzero()) == 0 for n, m in masks.items())


def test_timm_names_are_checked_in_one_line():
    check_model_name("timm/test_resnet")
    with pytest.raises(ValueError, match=r"timm has no model 'test_resnetx'; close: .*test_resnet"):
        check_model_name("timm/test_resnetx")
    with pytest.raises(ValueError, match=r"unknown model source 'nope' in 'nope/resnet18'; choose from timm/NAME"):
        build_model("nope/resnet18", 10)

import pytest
import torch
from torch import nn

from nptm.models import MODELS, build_model, count_flops, count_params, reinitialize

SHAPES = {"digits_net": (1, 8, 8), "resnet18": (3, 32, 32), "resnet34": (3, 32, 32), "resnet50": (3, 32, 32)}


@pytest.mark.parametrize("name", list(MODELS))
def test_build_and_forward(name):
    shape = SHAPES.get(name, (3, 32, 32))
    model = build_model(name, 7, in_channels=shape[0]).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="resnet56.*vgg16"):
        build_model("resnet57", 10)


def test_cifar_resnet_matches_reference_sizes():
    # akamaster/pytorch_resnet_cifar10 README: resnet20 0.27M, resnet56 0.85M, resnet110 1.7M params.
    assert count_params(build_model("resnet20", 10))[0] == 269_722
    assert round(count_params(build_model("resnet56", 10))[0] / 1e4) == 85
    assert round(count_params(build_model("resnet110", 10))[0] / 1e5) == 17
    m = build_model("resnet20", 10)
    assert not list(m.layer2[0].shortcut.parameters())  # option A: parameter-free shortcut


def test_count_params_counts_nonzero():
    m = build_model("digits_net", 10, 1)
    total = sum(p.numel() for p in m.parameters())
    with torch.no_grad():
        m.features[0].weight[:3].zero_()
    before = count_params(m)
    assert before[0] == total
    assert before[1] == sum(int((p != 0).sum()) for p in m.parameters())
    assert before[1] <= total - 3 * 9


def test_resnet56_macs_closed_form():
    # stem + 3 stages of 18 3x3 convs (first conv of stages 2, 3 has half the input channels) + fc
    k = 9
    expected = 3 * 16 * k * 32 * 32
    expected += 18 * 16 * 16 * k * 32 * 32
    expected += (16 * 32 + 17 * 32 * 32) * k * 16 * 16
    expected += (32 * 64 + 17 * 64 * 64) * k * 8 * 8
    expected += 64 * 10
    model = build_model("resnet56", 10)
    assert count_flops(model, (3, 32, 32)) == expected
    assert abs(expected - 125e6) < 1e6
    assert count_flops(model, (2, 3, 32, 32)) == expected  # batch dim divided out


def test_effective_flops_scale_with_density():
    m = build_model("digits_net", 10, 1)
    conv_macs = [1 * 16 * 9 * 64, 16 * 32 * 9 * 64, 32 * 64 * 9 * 16]
    fc = 64 * 10
    assert count_flops(m, (1, 8, 8)) == sum(conv_macs) + fc
    with torch.no_grad():
        m.features[3].weight[:8].zero_()  # a quarter of conv 2
        m.classifier[0].weight.zero_()
    density2 = m.features[3].weight.count_nonzero().item() / m.features[3].weight.numel()
    expected = conv_macs[0] + conv_macs[1] * density2 + conv_macs[2]
    assert count_flops(m, (1, 8, 8), effective=True) == round(expected)
    assert count_flops(m, (1, 8, 8)) == sum(conv_macs) + fc


def test_count_flops_leaves_model_state_alone():
    m = build_model("resnet20", 10).train()
    stats = {k: v.clone() for k, v in m.state_dict().items()}
    count_flops(m, (3, 32, 32))
    assert m.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, stats[k]), k


@pytest.mark.parametrize("name", ["resnet20", "vgg16", "digits_net", "resnet18"])
def test_reinitialize_redraws_weights(name):
    m = build_model(name, 10, 1 if name == "digits_net" else 3)
    conv = next(x for x in m.modules() if isinstance(x, nn.Conv2d))
    before = conv.weight.detach().clone()
    reinitialize(m)
    assert not torch.equal(before, conv.weight)

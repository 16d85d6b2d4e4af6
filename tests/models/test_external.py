"""Any torchvision classification model by name, and package.module:factory; unstructured pruning on them."""
import sys

import pytest
import torch
from torch import nn

from nptm.models import MODELS, build_model, check_model_name
from nptm.models.external import torchvision_names
from nptm.pruning import prunable_weights, prune_unstructured

# small members of families with distinct structure (depthwise and grouped convs, channel shuffle, squeeze-excite,
# concatenations, fire modules, inception branches); the large ones share their code and take minutes on CI's CPU
SMALL = {"mobilenet_v3_small": 32, "shufflenet_v2_x0_5": 32, "squeezenet1_1": 64, "regnet_x_400mf": 32,
         "efficientnet_b0": 32, "googlenet": 32, "mnasnet0_5": 32, "densenet121": 32}


def test_every_torchvision_classification_model_is_accepted():
    assert len(torchvision_names()) >= 80
    for name in torchvision_names():
        check_model_name(name)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_torchvision_model_trains_pruned(name):
    torch.manual_seed(0)
    model = build_model(name, 5)
    # global magnitude on a fresh init empties zero-initialised classifiers and some
    # depthwise convs, even at 50%: every layer keeps 1% of its weights
    masks = prune_unstructured(model, "magnitude", 0.5, include_linear=True, max_layer_sparsity=0.99)
    assert masks.sparsity() == pytest.approx(0.5, abs=1e-6)
    assert all(int(m.count_nonzero()) >= 0.01 * m.numel() for m in masks.values())
    side = SMALL[name]
    out = model.train()(torch.randn(2, 3, side, side))
    assert out.shape == (2, 5)
    out.sum().backward()
    masks.apply(model)
    for n, m in masks.items():
        assert model.get_parameter(n)[~m].count_nonzero() == 0


def test_nptm_names_come_first_and_torchvision_stays_reachable():
    assert type(build_model("vgg16", 10)).__name__ == "CifarVGG" and "vgg16" in MODELS
    tv = build_model("torchvision.models:vgg11", 3)
    assert type(tv).__module__.startswith("torchvision") and tv.classifier[-1].out_features == 3


def test_factory(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))\n"
        "class Zoo:\n"
        "    @staticmethod\n"
        "    def build(num_classes):\n"
        "        return tiny(num_classes)\n"
        "def not_a_model(num_classes):\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("my_nets:tiny", "my_nets:Zoo.build"):
        model = build_model(spec, 6)
        assert isinstance(model, nn.Module) and model(torch.randn(1, 3, 8, 8)).shape == (1, 6)
        assert list(prunable_weights(model)) == ["0.weight"]
    for spec, message in [("my_nets:nope", "has no nope"), ("no_such_pkg.x:f", "cannot import no_such_pkg.x"),
                          ("my_nets:not_a_model", "returned int"), ("my_nets:", "expected package.module:factory"),
                          ("resnet57", "unknown model 'resnet57'.*torchvision")]:
        with pytest.raises(ValueError, match=message):
            build_model(spec, 6)
    sys.modules.pop("my_nets", None)


def test_three_channel_only():
    with pytest.raises(ValueError, match="3-channel"):
        build_model("mobilenet_v3_small", 10, in_channels=1)

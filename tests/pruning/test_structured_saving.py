"""save_pruned / load_pruned: weights_only files, masks, and manifests that do not fit refused in one line."""
import pytest
import torch

from nptm import load_pruned, save_pruned
from nptm.models import build_model, filter_preset
from nptm.pruning.structured import prune_channels


def pruned_resnet20():
    torch.manual_seed(0)
    return prune_channels(build_model("resnet20", 10), "l1_filters", 0.4).eval()


def test_roundtrip_with_masks_weights_only(tmp_path):
    pruned = pruned_resnet20()
    masks = {"fc.weight": torch.rand(10, 64) > 0.5}
    save_pruned(pruned, tmp_path / "m.pt", masks)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["shapes"]["layer1.0.conv1.weight"] == [9, 16, 3, 3] and payload["format"] == "nptm.pruned/1"
    loaded, loaded_masks = load_pruned(build_model("resnet20", 10), tmp_path / "m.pt", with_masks=True)
    assert torch.equal(loaded_masks["fc.weight"], masks["fc.weight"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), pruned(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_preset_model_roundtrip(tmp_path):
    dense = build_model("resnet56", 10)
    pruned = prune_channels(dense, "random_filters", filter_preset("resnet56", "B"),
                            generator=torch.Generator().manual_seed(0)).eval()
    save_pruned(pruned, tmp_path / "b.pt")
    loaded = load_pruned(build_model("resnet56", 10), tmp_path / "b.pt").eval()
    assert [b.conv1.out_channels for b in loaded.layer1] == [b.conv1.out_channels for b in pruned.layer1]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def test_manifest_that_does_not_fit(tmp_path):
    save_pruned(pruned_resnet20(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"does not fit CifarResNet: tensor layer1\.3\.conv1\.weight is not in the file"):
        load_pruned(build_model("resnet32", 10), tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["shapes"]["layer2.1.bn1.running_var"] = [5]  # a manifest whose counts disagree with its own conv
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"tensor layer2\.1\.bn1\.running_var has shape \[5\] in the file") as e:
        load_pruned(build_model("resnet20", 10), tmp_path / "bad.pt")
    assert "\n" not in str(e.value)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a pruned-model file"):
        load_pruned(build_model("resnet20", 10), tmp_path / "other.pt")

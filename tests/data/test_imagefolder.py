"""The imagefolder dataset: any number of classes and image sizes, torchvision or FFCV, one-line errors."""
import pytest
import torch

from fakedata import make_image_folder
from nptm.data import DataConfig, DataError, build_dataset, get_dataset
from nptm.data.loaders import ffcv_available


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    make_image_folder(root / "train", classes=5, per_class=4, max_side=90, min_side=20, seed=1)
    make_image_folder(root / "val", classes=5, per_class=2, max_side=90, min_side=20, seed=2)
    return root


def config(root, **kw):
    return DataConfig(name="imagefolder", data_dir=str(root), batch_size=6, workers=0, train_resolution=24,
                      val_resolution=28, **kw)


def test_any_classes_and_sizes_through_torchvision(folder, capsys):
    spec = build_dataset(config(folder))
    assert (spec.num_classes, spec.train_examples, spec.image_size, spec.in_channels) == (5, 20, 28, 3)
    assert "no train.beton, val.beton" in capsys.readouterr().err  # auto says why it took the slower loader
    x, y = next(iter(spec.train))
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.float32 and y.max() < 5
    xs, ys = zip(*spec.test)
    assert torch.cat(xs).shape == (10, 3, 28, 28) and sorted(torch.cat(ys).tolist()) == sorted([0, 1, 2, 3, 4] * 2)
    defaults = get_dataset("imagefolder").defaults
    assert defaults["model"] == "resnet50" and defaults["epochs"] == 90  # the SPEC's ImageNet recipe


def test_class_folders_must_agree(tmp_path):
    make_image_folder(tmp_path / "train", classes=3, per_class=2, max_side=40, min_side=20)
    make_image_folder(tmp_path / "val", classes=2, per_class=2, max_side=40, min_side=20)
    with pytest.raises(DataError, match="different class folders"):
        build_dataset(config(tmp_path, loader="torchvision"))
    with pytest.raises(DataError, match="lacks train/, val/"):
        build_dataset(config(tmp_path / "train", loader="torchvision"))


@pytest.mark.skipif(not ffcv_available(), reason="ffcv is not installed")
def test_through_ffcv_when_beton_files_are_there(tmp_path):
    from nptm.data.loaders.ffcv_loader import FFCVLoader
    from nptm.data.write import convert

    make_image_folder(tmp_path / "train", classes=4, per_class=3, max_side=70, min_side=30)
    make_image_folder(tmp_path / "val", classes=4, per_class=2, max_side=70, min_side=30, seed=5)
    for split in ("train", "val"):
        convert(f"imagefolder:{tmp_path / split}", tmp_path / f"{split}.beton", workers=1)
    spec = build_dataset(config(tmp_path, loader="ffcv"))
    assert isinstance(spec.train, FFCVLoader) and (spec.num_classes, spec.train_examples) == (4, 12)
    x, y = next(iter(spec.train))
    assert x.shape == (6, 3, 24, 24) and y.max() < 4

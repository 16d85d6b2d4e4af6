"""ImageNet dataset: loader choice, the torchvision+PIL fallback, recipe helpers (no ffcv needed)."""
import numpy as np
import pytest
import torch

import nptm.data.loaders.choose as choose_mod
from fakedata import make_image_folder
from nptm.data.constants import IMAGENET_MEAN, IMAGENET_STD
from nptm.data.imagefolder import ImageOptions, image_folder_spec
from nptm.data.loaders import choose_loader
from nptm.data.registry import DataConfig, DataError, build_dataset
from nptm.data.transforms import DeviceNormalize, ProgressiveResize
from nptm.study.presets import IMAGENET_PRESET, ffcv_imagenet_lr

BETONS, FOLDERS = ("train.beton", "val.beton"), ("train", "val")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_folders")
    train = make_image_folder(root / "train", classes=3, per_class=6, max_side=120, min_side=40, seed=3)
    val = make_image_folder(root / "val", classes=3, per_class=3, max_side=120, min_side=40, seed=4)
    return root, train, val


def layout(tmp_path, betons: bool, folders: bool):
    for n in BETONS if betons else ():
        (tmp_path / n).write_bytes(b"")
    for n in FOLDERS if folders else ():
        (tmp_path / n).mkdir()
    return tmp_path


@pytest.mark.parametrize("ffcv_ok", [True, False])
@pytest.mark.parametrize("betons, folders_, loader", [(b, f, lo) for b in (True, False) for f in (True, False)
                                                      for lo in ("auto", "ffcv", "torchvision")])
def test_choose_loader(tmp_path, capsys, monkeypatch, ffcv_ok, betons, folders_, loader):
    monkeypatch.setattr(choose_mod, "ffcv_import_error", lambda: None if ffcv_ok else "ImportError: no ffcv")
    root = layout(tmp_path, betons, folders_)
    if loader == "ffcv":
        expected = "ffcv" if ffcv_ok and betons else None
    elif loader == "torchvision":
        expected = "torchvision" if folders_ else None
    else:
        expected = "ffcv" if ffcv_ok and betons else "torchvision" if folders_ else None
    if expected is None:
        with pytest.raises(DataError) as err:
            choose_loader(loader, root, BETONS, FOLDERS, "imagenet")
        msg = str(err.value)
        assert "\n" not in msg
        assert ("no ffcv" if loader == "ffcv" and not ffcv_ok else str(root)) in msg
        if loader == "auto" and betons and not ffcv_ok:
            assert "no ffcv" in msg
        return
    assert choose_loader(loader, root, BETONS, FOLDERS, "imagenet") == expected
    stderr = capsys.readouterr().err
    fell_back = loader == "auto" and expected == "torchvision"
    assert stderr.count("\n") == (1 if fell_back else 0)
    if fell_back:
        assert ("no ffcv" if betons else "no train.beton, val.beton") in stderr and "torchvision" in stderr


def test_unknown_loader_and_missing_dir(tmp_path):
    with pytest.raises(DataError, match="unknown loader 'dali'"):
        choose_loader("dali", tmp_path, BETONS, FOLDERS, "imagenet")
    with pytest.raises(DataError, match="needs --data-dir"):
        build_dataset(DataConfig(name="imagenet"))
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(DataConfig(name="imagenet", data_dir=str(tmp_path / "nope")))


def test_fallback_loader_batches(folders, capsys):
    root, train_samples, val_samples = folders
    cfg = DataConfig(name="imagenet", data_dir=str(root), batch_size=4, workers=0, loader="auto", seed=7,
                     channels_last=True)
    spec = image_folder_spec(cfg, ImageOptions(progressive_resize=ProgressiveResize(32, 48, 0, 1, step=16),
                                              val_resolution=40))
    assert capsys.readouterr().err.count("\n") == 1  # no .beton files: one line announcing the fallback
    sizes = (spec.num_classes, spec.train_examples, spec.image_size, len(spec.train), len(spec.test))
    assert sizes == (3, 18, 40, 4, 3)
    lo = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1) - 1e-5
    hi = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1) + 1e-5
    orders = {}
    for epoch, res in ((0, 32), (1, 48), (0, 32)):
        spec.train.set_epoch(epoch)
        ys = []
        for x, y in spec.train:
            assert x.shape == (4, 3, res, res) and x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.is_contiguous(memory_format=torch.channels_last) and ((x >= lo) & (x <= hi)).all()
            ys += y.tolist()
        assert len(ys) == 16 and len(set(ys)) == 3
        orders.setdefault(epoch, []).append(ys)
    assert orders[0][0] == orders[0][1] != orders[1][0]
    ys = [y for _, ys in spec.test for y in ys.tolist()]
    assert ys == [label for _, label in val_samples]


def test_fallback_sharding(folders):
    root, train_samples, val_samples = folders
    seen = []
    for rank in (0, 1):
        cfg = DataConfig(name="imagenet", data_dir=str(root), batch_size=3, workers=0, loader="torchvision",
                         rank=rank, world_size=2)
        spec = image_folder_spec(cfg, ImageOptions(train_resolution=24, val_resolution=24))
        spec.train.set_epoch(2)
        seen += list(spec.train.sampler)
        assert len(spec.train) == 3
        assert [y for _, ys in spec.test for y in ys.tolist()] == [label for _, label in val_samples][rank::2]
    assert sorted(seen) == list(range(18))
    with pytest.raises(DataError, match="needs the FFCV loader"):
        image_folder_spec(cfg, ImageOptions(order="quasi_random"))


def test_progressive_resize_matches_ffcv_imagenet_schedule():
    rn50_88 = IMAGENET_PRESET["rn50_88"]["progressive_resize"]
    res = [rn50_88(e) for e in range(88)]
    assert res[:66] == [160] * 66 and res[76:] == [192] * 12
    assert res[70] == 160 and res[71] == 192  # interp(70) = 174.5 -> 5 x 32; interp(71) = 177.5 -> 6 x 32
    assert all(r % 32 == 0 for r in res) and res == sorted(res)


def test_ffcv_imagenet_lr_and_preset():
    lr = [ffcv_imagenet_lr(e, 1.7, 16) for e in (0, 1, 2, 9, 16)]
    np.testing.assert_allclose(lr, [1.7e-4, (1.7e-4 + 1.7) / 2, 1.7, 1.7 * 7 / 14, 0.0])
    for name, p in IMAGENET_PRESET.items():
        assert p["arch"] in ("resnet50", "resnet18") and str(p["epochs"]) in name
        recipe = (p["lr_peak_epoch"], p["label_smoothing"], p["amp_dtype"], p["channels_last"])
        assert recipe == (2, 0.1, "bfloat16", True)
        assert (p["progressive_resize"].min_res, p["progressive_resize"].max_res) == (160, 192)
        assert p["progressive_resize"].end_ramp < p["epochs"] and p["tta_flip"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_device_normalize(dtype, channels_last):
    x = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    out = DeviceNormalize(IMAGENET_MEAN, IMAGENET_STD, "cpu", dtype, channels_last)(x)
    ref = (x.double() / 255 - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(out.double(), ref.to(dtype).double(), atol=1e-5 if dtype == torch.float32 else 2e-2,
                               rtol=1e-5 if dtype == torch.float32 else 1e-2)

"""FFCV loaders on generated .beton files: batches, values, augmentations, ordering, training."""
import gc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("ffcv")
from ffcv.pipeline.compiler import Compiler  # noqa: E402

from fakedata import make_cifar_folder, make_image_folder  # noqa: E402
from nptm.data.cifar import cifar_beton_spec  # noqa: E402
from nptm.data.constants import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from nptm.data.imagefolder import ImageOptions, image_folder_spec  # noqa: E402
from nptm.data.loaders.ffcv_loader import beton_info, imagenet_train_loader, imagenet_val_loader  # noqa: E402
from nptm.data.transforms import ProgressiveResize  # noqa: E402
from nptm.train.evaluate import evaluate  # noqa: E402
from nptm.data.registry import DataConfig, DataError, build_dataset  # noqa: E402
from nptm.data.write import convert  # noqa: E402

BATCH, RES = 8, 64
# Each ffcv JPEG decoder wraps the same ``imdecode`` in its own numba dispatcher; numba's finalizer
# of the second one raises a harmless KeyError ("Exception ignored") when the loaders are freed.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    train = make_image_folder(root / "train", classes=3, per_class=8, seed=1)
    val = make_image_folder(root / "val", classes=3, per_class=4, seed=2)
    for split in ("train", "val"):
        convert(f"imagefolder:{root / split}", root / f"{split}.beton", workers=1)
    return root, train, val


def cfg_for(root, **kw):
    base = dict(name="imagenet", data_dir=str(root), batch_size=BATCH, workers=1, loader="ffcv", channels_last=True)
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def imagenet(imagenet_dir):
    root = imagenet_dir[0]
    opts = ImageOptions(progressive_resize=ProgressiveResize(48, RES, start_ramp=0, end_ramp=1, step=16),
                           val_resolution=RES)
    return image_folder_spec(cfg_for(root), opts)


@pytest.fixture(scope="module", autouse=True)
def collect_loaders():
    """Free ffcv's numba dispatchers while no loader thread runs (their finalizers are not thread-safe)."""
    yield
    gc.collect()


@pytest.fixture
def no_jit():
    """Pure-Python ffcv ops: ordering and sharding do not depend on numba, and compiling costs seconds."""
    Compiler.set_enabled(False)
    yield
    Compiler.set_enabled(True)


def channel_bounds(mean, std):
    lo = torch.tensor([(0 - m) / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    return lo - 1e-5, hi + 1e-5


def test_imagenet_train_batches(imagenet, imagenet_dir):
    _, train_samples, _ = imagenet_dir
    spec = imagenet
    assert (spec.num_classes, spec.train_examples, spec.image_size, len(spec.train)) == (3, 24, RES, 3)
    lo, hi = channel_bounds(IMAGENET_MEAN, IMAGENET_STD)
    orders = {}
    for epoch, res in ((0, 48), (1, RES), (0, 48)):
        spec.train.set_epoch(epoch)
        labels = []
        for x, y in spec.train:
            assert x.shape == (BATCH, 3, res, res) and x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.is_contiguous(memory_format=torch.channels_last)
            assert ((x >= lo) & (x <= hi)).all() and x.std() > 0.1
            labels.append(y.clone())
        labels = torch.cat(labels)
        assert sorted(labels.tolist()) == sorted(label for _, label in train_samples)  # every image once
        orders.setdefault(epoch, []).append(labels.tolist())
    assert orders[0][0] == orders[0][1] != orders[1][0]  # set_epoch replays an epoch's shuffle


def test_imagenet_val_matches_torchvision_fallback(imagenet, imagenet_dir):
    from nptm.data.loaders.folder import imagefolder_val_loader

    root, _, val_samples = imagenet_dir
    fallback = imagefolder_val_loader(root / "val", cfg_for(root, loader="torchvision", workers=0), resolution=RES)
    xs, ys = zip(*[(x.clone(), y) for x, y in imagenet.test])
    xf, yf = zip(*fallback)
    x, y, x_ref, y_ref = torch.cat(xs), torch.cat(ys), torch.cat(xf), torch.cat(yf)
    assert y.tolist() == y_ref.tolist() == [label for _, label in val_samples]
    assert x.shape == x_ref.shape == (12, 3, RES, RES)
    # same centre crop: resampling filters and JPEG re-encoding differ by ~0.015; a crop ratio of 1
    # instead of 224/256 by ~0.06, a mirrored image by ~0.4
    assert (x - x_ref).abs().mean() < 0.03


def test_imagenet_sharding_and_order(imagenet_dir, no_jit):
    root, train_samples, val_samples = imagenet_dir
    labels = np.array([label for _, label in train_samples])
    shards = []
    for rank in (0, 1):
        cfg = cfg_for(root, rank=rank, world_size=2, batch_size=4, seed=5)
        loader = imagenet_train_loader(root / "train.beton", cfg, resolution=32)
        loader.set_epoch(3)
        order = loader.loader.traversal_order.sample_order(3)
        ys = torch.cat([y for _, y in loader]).numpy()
        assert len(loader) == 3 and (ys == labels[order]).all()
        shards.append(order)
        val = imagenet_val_loader(root / "val.beton", cfg, resolution=32)
        assert torch.cat([y for _, y in val]).tolist() == [label for _, label in val_samples][rank::2]
    assert sorted(np.concatenate(shards).tolist()) == list(range(24))

    quasi = imagenet_train_loader(root / "train.beton", cfg_for(root, batch_size=4), resolution=32,
                                  order="quasi_random")
    ys = torch.cat([y for _, y in quasi])
    assert len(ys) == 24 and sorted(ys.tolist()) == sorted(labels.tolist())
    with pytest.raises(DataError, match="unknown FFCV order"):
        imagenet_train_loader(root / "train.beton", cfg_for(root), order="sorted")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    data = make_cifar_folder(root, "cifar100", n_train=40, n_test=16, seed=3)
    for split in ("train", "test"):
        convert(f"cifar100:{root}", root / f"{split}.beton", split=split, workers=1)
    cfg = DataConfig(name="cifar100", data_dir=str(root), batch_size=16, workers=1, seed=1)
    return cifar_beton_spec(cfg), {**data, "root": root}


def normalized(x_uint8):
    """The float32 values ffcv's NormalizeImage table holds (computed in float64, then rounded)."""
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float64).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR_STD, dtype=torch.float64).view(1, 3, 1, 1) * 255
    return ((x_uint8.double() - mean) / std).float()


def test_cifar_test_loader_is_exact(cifar):
    spec, data = cifar
    assert (spec.num_classes, spec.train_examples, spec.image_size, len(spec.test)) == (100, 40, 32, 1)
    (x, y), = list(spec.test)  # one batch; ffcv iterators are always run to the end here
    x_ref, y_ref = data["test"]
    torch.testing.assert_close(x, normalized(torch.from_numpy(x_ref)), rtol=0, atol=0)
    assert y.tolist() == y_ref.tolist()


def test_beton_decoded_into_memory(cifar, imagenet_dir, tmp_path):
    from nptm.data.loaders.beton_memory import read_beton_images

    _, data = cifar
    root = data["root"]
    x, y = read_beton_images(root / "train.beton")  # raw images: copied exactly
    assert torch.equal(x, torch.from_numpy(data["train"][0])) and y.tolist() == data["train"][1].tolist()
    convert(f"cifar100:{root}", tmp_path / "jpg.beton", split="test", write_mode="jpg", jpeg_quality=95, workers=1)
    xj, yj = read_beton_images(tmp_path / "jpg.beton")  # JPEG images: decoded, close to the originals
    assert xj.shape == (16, 3, 32, 32) and yj.tolist() == data["test"][1].tolist()
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader
    from ffcv.transforms import ToTensor

    ffcv_decoded = Loader(str(tmp_path / "jpg.beton"), batch_size=16, num_workers=1, drop_last=False,
                          pipelines={"image": [SimpleRGBImageDecoder(), ToTensor()], "label": [IntDecoder(), ToTensor()]})
    (ref, _), = [(x.clone(), y) for x, y in ffcv_decoded]
    diff = (xj.int() - ref.permute(0, 3, 1, 2).int()).abs()  # PIL vs FFCV's turbojpeg: chroma upsampling differs
    assert diff.float().mean() < 2 and diff.max() <= 16
    assert read_beton_images(imagenet_dir[0] / "train.beton") is None  # sizes differ: FFCV's decoders crop them


def test_cifar_train_is_a_pad_crop_flip_of_the_original(cifar):
    spec, data = cifar
    x_ref, y_ref = data["train"]
    by_label = {int(label): torch.from_numpy(x_ref[i]) for i, label in enumerate(y_ref)}  # labels are unique
    spec.train.set_epoch(0)
    seen, flipped, shifted = [], 0, 0
    for x, y in spec.train:
        for img, label in zip(x, y.tolist()):
            padded = F.pad(by_label[label], (4, 4, 4, 4))
            cands = torch.stack([c[:, dy : dy + 32, dx : dx + 32] for c in (padded, padded.flip(-1))
                                 for dy in range(9) for dx in range(9)])
            match = (normalized(cands) == img).flatten(1).all(1).nonzero().flatten().tolist()
            assert match, f"image {label} is no pad-4 crop/flip of its source"
            flipped += match[0] >= 81
            shifted += match[0] % 81 != 40
            seen.append(label)
    assert len(seen) == 32 and len(set(seen)) == 32  # drop_last: 2 full batches of distinct images
    assert 0 < flipped < 32 and shifted > 16


def test_one_epoch_training_and_tta_evaluation(imagenet):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    before = evaluate(model, imagenet.test)
    losses = []
    for epoch in range(6):
        imagenet.train.set_epoch(epoch)
        for x, y in imagenet.train:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    after = evaluate(model, imagenet.test, tta_flip=True)
    assert np.isfinite(losses).all() and after["count"] == 12
    assert after["loss"] < before["loss"] and after["top1"] >= 2 / 3  # class = brightest channel


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_gpu_pipeline_normalizes_on_device(imagenet_dir, imagenet, device):
    root = imagenet_dir[0]
    val = imagenet_val_loader(root / "val.beton", cfg_for(root, device=device), resolution=RES, dtype=torch.bfloat16)
    x, y = list(val)[0]
    assert x.device.type == "cuda" and x.dtype == torch.bfloat16 and y.device.type == "cuda"
    assert x.is_contiguous(memory_format=torch.channels_last)
    x_cpu, y_cpu = [(x.clone(), y) for x, y in imagenet.test][0]
    assert y.cpu().tolist() == y_cpu.tolist()
    torch.testing.assert_close(x.float().cpu(), x_cpu, atol=0.02, rtol=0.01)  # bf16 rounding only


def test_missing_or_unreadable_beton(tmp_path, imagenet_dir):
    with pytest.raises(DataError, match="lacks train.beton, val.beton"):
        image_folder_spec(cfg_for(tmp_path))
    (tmp_path / "train.beton").write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match="unreadable .beton file"):
        beton_info(tmp_path / "train.beton")
    for loader in ("ffcv", "auto"):
        with pytest.raises(DataError, match="lacks test.beton|cifar-10-batches-py"):
            build_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path), loader=loader))
    from nptm.data.loaders.beton_memory import read_beton_images

    with pytest.raises(DataError, match="unreadable .beton file"):
        read_beton_images(tmp_path / "train.beton")


def test_torch_keeps_its_threads(tmp_path):
    """ffcv's import calls torch.set_num_threads(1): through nptm, CPU training keeps every thread."""
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(2)\n"
            "from nptm.data.loaders.choose import ffcv_available; assert ffcv_available()\n"
            "import nptm.data.loaders.ffcv_loader, nptm.data.loaders.beton_memory\n"
            "import ffcv.pipeline.compiler\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"

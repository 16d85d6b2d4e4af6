import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nptm.data import DATASETS, DataConfig, DataError, build_dataset
from nptm.data.constants import CIFAR_MEAN as MEAN, CIFAR_STD as STD
from nptm.data.transforms import augment_batch

N_PER_BATCH, N_TEST = 6, 5


def _write(path, images, labels, label_key="labels"):
    with open(path, "wb") as f:
        pickle.dump({b"data": images.reshape(len(images), -1), label_key.encode(): labels.tolist(), b"batch_label": b"x"}, f)


def fake_cifar10(root, rng):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = N_TEST if name == "test_batch" else N_PER_BATCH
        x, y = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)
        _write(folder / name, x, y)
        parts[name] = (x, y)
    return folder, parts


@pytest.fixture
def cifar_dir(tmp_path):
    folder, parts = fake_cifar10(tmp_path, np.random.default_rng(0))
    return tmp_path, parts


def test_cifar10_loads_all_examples(cifar_dir):
    root, parts = cifar_dir
    spec = build_dataset(DataConfig(name="cifar10", data_dir=str(root), batch_size=4, seed=1))
    assert {"cifar10", "cifar100"} <= set(DATASETS)
    assert (spec.num_classes, spec.in_channels, spec.image_size, spec.train_examples) == (10, 3, 32, 5 * N_PER_BATCH)
    ys = torch.cat([y for _, y in spec.train])
    expected = np.concatenate([parts[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert sorted(ys.tolist()) == sorted(expected.tolist())
    xt, yt = zip(*spec.test)
    x = torch.cat(xt)
    ref = (torch.from_numpy(parts["test_batch"][0]).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref)  # test images: normalized, not augmented
    assert torch.cat(yt).tolist() == parts["test_batch"][1].tolist()


def test_train_batches_are_crops_of_the_originals(cifar_dir):
    root, parts = cifar_dir
    spec = build_dataset(DataConfig(name="cifar10", data_dir=str(root), batch_size=7, seed=2))
    originals = torch.from_numpy(np.concatenate([parts[f"data_batch_{i}"][0] for i in range(1, 6)])).float()
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    labels = np.concatenate([parts[f"data_batch_{i}"][1] for i in range(1, 6)])
    for x, y in spec.train:
        raw = torch.round((x * std + mean) * 255)
        for img, label in zip(raw, y.tolist()):
            assert any(_is_crop(img, o) for o, lab in zip(originals, labels) if lab == label)


def _is_crop(img, original):
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    for dy in range(9):
        for dx in range(9):
            crop = padded[:, dy:dy + 32, dx:dx + 32]
            if torch.equal(img, crop) or torch.equal(img, crop.flip(2)):
                return True
    return False


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 12))
def test_augment_batch_matches_reference(seed, n, h, w):
    """Each output is the (dy, dx) crop of the zero-padded input, flipped when drawn: checked exhaustively."""
    x = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    out = augment_batch(x, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(n):
        crops = [padded[i, :, dy:dy + h, dx:dx + w] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops)


def test_augmentation_is_deterministic_per_epoch(cifar_dir):
    root, _ = cifar_dir
    spec = build_dataset(DataConfig(name="cifar10", data_dir=str(root), batch_size=30, seed=2))
    spec.train.set_epoch(3)
    a = next(iter(spec.train))[0]
    spec.train.set_epoch(4)
    b = next(iter(spec.train))[0]
    spec.train.set_epoch(3)
    c = next(iter(spec.train))[0]
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in [("train", 8), ("test", 4)]:
        _write(folder / name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 100, n), "fine_labels")
    spec = build_dataset(DataConfig(name="cifar100", data_dir=str(tmp_path), batch_size=4))
    assert (spec.num_classes, spec.train_examples) == (100, 8)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="cifar10 not found.*data_batch_1"):
        build_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="needs --data-dir"):
        build_dataset(DataConfig(name="cifar10", data_dir=None))


@pytest.mark.parametrize("corrupt", ["truncated", "shape", "labels", "evil_pickle", "not_a_dict"])
def test_malformed_files(cifar_dir, corrupt):
    root, parts = cifar_dir
    path = root / "cifar-10-batches-py" / "data_batch_2"
    if corrupt == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif corrupt == "shape":
        _write(path, np.zeros((3, 100), np.uint8), np.zeros(3, int))
    elif corrupt == "labels":
        _write(path, np.zeros((3, 3, 32, 32), np.uint8), np.array([0, 1, 10]))
    elif corrupt == "evil_pickle":
        class Evil:
            def __reduce__(self):
                return (print, ("executed",))
        path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    else:
        path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="malformed"):
        build_dataset(DataConfig(name="cifar10", data_dir=str(root)))

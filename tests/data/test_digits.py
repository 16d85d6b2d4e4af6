import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from nptm.data import DATASETS, DataConfig, DataError, build_dataset
from nptm.data.loaders import TensorLoader


@pytest.fixture(scope="module")
def spec():
    return build_dataset(DataConfig(name="digits", batch_size=64, seed=3))


def _all(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_registered_and_shapes(spec):
    assert "digits" in DATASETS
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (10, 1, 8)
    x, y = _all(spec.train)
    xt, yt = _all(spec.test)
    assert x.shape == (spec.train_examples, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert len(y) + len(yt) == 1797 and len(yt) == 360
    assert len(spec.train) == -(-spec.train_examples // 64)


def test_split_is_stratified_disjoint_and_normalized(spec):
    x, y = _all(spec.train)
    xt, yt = _all(spec.test)
    raw_x, raw_y = load_digits(return_X_y=True)
    # every example appears exactly once across the split
    rows = {tuple(r) for r in np.round(torch.cat([x, xt]).reshape(-1, 64).numpy(), 4)}
    assert len(rows) == len({tuple(r) for r in raw_x})
    train_counts, test_counts = np.bincount(y.numpy(), minlength=10), np.bincount(yt.numpy(), minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, np.bincount(raw_y))
    assert np.all(np.abs(test_counts / len(yt) - np.bincount(raw_y) / len(raw_y)) < 0.01)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-4


def test_split_is_fixed_across_seeds(spec):
    other = build_dataset(DataConfig(name="digits", batch_size=64, seed=11))
    torch.testing.assert_close(_all(other.test)[0], _all(spec.test)[0], rtol=0, atol=0)


def test_epoch_order_is_deterministic_per_seed_stream_epoch(spec):
    loader = spec.train
    orders = {}
    for epoch, stream in [(0, 0), (1, 0), (0, 5), (0, 0)]:
        loader.set_epoch(epoch, stream=stream)
        orders.setdefault((epoch, stream), []).append(_all(loader)[0])
    torch.testing.assert_close(*orders[(0, 0)], rtol=0, atol=0)
    assert not torch.equal(orders[(0, 0)][0], orders[(1, 0)][0])
    assert not torch.equal(orders[(0, 0)][0], orders[(0, 5)][0])
    x_sorted = lambda t: t.reshape(len(t), -1).sort(0).values  # noqa: E731  same multiset of examples
    torch.testing.assert_close(x_sorted(orders[(0, 0)][0]), x_sorted(orders[(1, 0)][0]), rtol=0, atol=0)


def test_ranks_get_disjoint_equal_shares():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    shares = [TensorLoader(x, y, 3, shuffle=True, seed=1, rank=r, world_size=3) for r in range(3)]
    seen = [torch.cat([b for _, b in s]) for s in shares]
    assert all(len(s) == 3 for s in seen) and len(set(torch.cat(seen).tolist())) == 9


def test_bad_batch_size():
    with pytest.raises(DataError, match="batch size"):
        build_dataset(DataConfig(name="digits", batch_size=0))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        build_dataset(DataConfig(name="mnist"))

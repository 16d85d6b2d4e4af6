"""scikit-learn's bundled 8x8 digits, held in memory as tensors, batched on the device."""
from __future__ import annotations

import numpy as np
import torch

from nptm.data.loaders.tensor import TensorLoader
from nptm.data.registry import DataConfig, DataError, DataSpec, register_dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the train/test split is fixed, independent of the run's seed
BETON_SCALE = 4  # written to .beton files upscaled 4x to 32x32 RGB


def _split(split: str):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    if split == "all":
        return x, y
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


def digits_source(name: str, path, split: str, workers: int = 1):
    """The digits split (train, test or all) as 32x32 RGB uint8 images, for ``python -m nptm.data write``."""
    from nptm.data.sources import ArrayImages, Source

    if split not in ("train", "test", "all"):
        raise DataError(f"digits split must be train, test or all, not {split!r}")
    x, y = _split(split)
    gray = np.rint(x.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    big = gray.repeat(BETON_SCALE, axis=1).repeat(BETON_SCALE, axis=2)
    return Source(ArrayImages(np.ascontiguousarray(np.stack([big] * 3, axis=-1)), y), 10, f"digits {split}"), []


@register_dataset("digits", defaults=dict(model="digits_net", epochs=30, retrain_epochs=10, batch_size=64, lr=0.1,
                                           milestones=(0.5, 0.75), threads=1, latency_batches=(1, 64)),
                  source=digits_source, imports=("sklearn.datasets", "sklearn.model_selection"))
def build_digits(cfg: DataConfig) -> DataSpec:
    x_tr, y_tr = _split("train")
    x_te, y_te = _split("test")
    mean, std = x_tr.mean(), x_tr.std()  # scalar statistics of the training split

    def tensors(a, b):
        xs = torch.as_tensor((a - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return xs.to(cfg.device), torch.as_tensor(b, dtype=torch.long).to(cfg.device)

    common = dict(rank=cfg.rank, world_size=cfg.world_size, channels_last=cfg.channels_last)
    train = TensorLoader(*tensors(x_tr, y_tr), cfg.batch_size, shuffle=True, seed=cfg.seed, **common)
    test = TensorLoader(*tensors(x_te, y_te), 512, shuffle=False, **common)
    return DataSpec(train=train, test=test, num_classes=10, in_channels=1, image_size=8, train_examples=len(y_tr))

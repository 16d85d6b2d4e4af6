"""scikit-learn's bundled 8x8 digits, held in memory as tensors, batched on the device."""
from __future__ import annotations

import torch

from nptm.data.loaders.tensor import TensorLoader
from nptm.data.registry import DataConfig, DataSpec, register_dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the train/test split is fixed, independent of the run's seed


@register_dataset("digits", defaults=dict(model="digits_net", epochs=30, retrain_epochs=10, batch_size=64, lr=0.1,
                                           milestones=(0.5, 0.75), threads=1))
def build_digits(cfg: DataConfig) -> DataSpec:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    mean, std = x_tr.mean(), x_tr.std()  # scalar statistics of the training split

    def tensors(a, b):
        xs = torch.as_tensor((a - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return xs.to(cfg.device), torch.as_tensor(b, dtype=torch.long).to(cfg.device)

    common = dict(rank=cfg.rank, world_size=cfg.world_size, channels_last=cfg.channels_last)
    train = TensorLoader(*tensors(x_tr, y_tr), cfg.batch_size, shuffle=True, seed=cfg.seed, **common)
    test = TensorLoader(*tensors(x_te, y_te), 512, shuffle=False, **common)
    return DataSpec(train=train, test=test, num_classes=10, in_channels=1, image_size=8, train_examples=len(y_tr))

"""``--preset NAME``: the ffcv-imagenet recipes (``nptm.data.imagenet.IMAGENET_PRESET``) as study config values.

A preset is a layer of defaults between the dataclass defaults and ``--config``/flags, so explicit values
win. Values tied to the length of training follow ``--epochs`` when it is given:

- lr: linear warm-up from 1e-4 x lr to lr at epoch min(2, T/8) (ffcv-imagenet: epoch 2 for T >= 16),
  then linear decay to 0 at T, stepped per iteration; FT retrains at the lr one epoch before the end;
- progressive resizing 160 -> 192 px with the ramp at the preset's fractions of each training phase
  (rn18_16: epochs 11 -> 13 of 16); an explicit ``--train-resolution`` turns it off;
- retraining budget T_rt = ceil(T / 2) (the ImageNet default's 45 of 90).

``--batch-size`` is global: the preset's per-GPU batch times its GPU count (rn50: 512 x 8; rn18: 1024 x 1);
the peak lr is not rescaled when you change it. bf16 autocast and channels_last are on for every CUDA run.
Not reproduced: blurpool, no weight decay on BatchNorm, plain (not Nesterov) momentum.
"""
from __future__ import annotations

from typing import Any

from nptm.data.imagenet import IMAGENET_PRESET

PRESETS = tuple(IMAGENET_PRESET)
WARMUP_START = 1e-4  # ffcv-imagenet's warm-up starts at 1e-4 x the peak lr
SHORTEST_RECIPE = 16  # epochs of ffcv-imagenet's shortest config, whose peak is at epoch 2


def preset_values(name: str, epochs: int | None = None, train_resolution: int | None = None) -> dict[str, Any]:
    """Flat config values of preset ``name`` for ``epochs`` of original training (default: the preset's)."""
    p = IMAGENET_PRESET[name]
    T = epochs or p["epochs"]
    r = p["progressive_resize"]
    values = dict(
        dataset="imagenet", model=p["arch"], epochs=p["epochs"], retrain_epochs=-(-T // 2),
        batch_size=p["batch_size"] * p["world_size"], lr=p["lr"], momentum=p["momentum"],
        weight_decay=p["weight_decay"], label_smoothing=p["label_smoothing"], decay="linear",
        warmup_epochs=min(float(p["lr_peak_epoch"]), T * p["lr_peak_epoch"] / SHORTEST_RECIPE),
        progressive_resize=(float(r.min_res), float(r.max_res), r.start_ramp / p["epochs"], r.end_ramp / p["epochs"]),
        val_resolution=p["val_resolution"], tta_flip=p["tta_flip"])
    if train_resolution is not None:
        del values["progressive_resize"]
    return values

"""``--preset NAME``: the ffcv-imagenet recipes (``IMAGENET_PRESET``) as study config values.

A preset is a layer of defaults between the dataclass defaults and ``--config``/flags, so explicit values
win. Values tied to the length of training follow ``--epochs`` when it is given:

- lr: linear warm-up from 1e-4 x lr to lr at epoch min(2, T/8) (ffcv-imagenet: epoch 2 for T >= 16),
  then linear decay to 0 at T, stepped per iteration; FT retrains at the lr one epoch before the end;
- progressive resizing 160 -> 192 px with the ramp at the preset's fractions of each training phase
  (rn18_16: epochs 11 -> 13 of 16); an explicit ``--train-resolution`` turns it off;
- retraining budget T_rt = ceil(T / 2) (the ImageNet default's 45 of 90).

``--batch-size`` is global: the preset's per-GPU batch times its GPU count (rn50: 512 x 8; rn18: 1024 x 1);
the peak lr is not rescaled when you change it. bf16 autocast and channels_last are on for every CUDA run.
Plain (not Nesterov) momentum, as the recipe uses (``--optimizer sgd``).
Not reproduced: blurpool, no weight decay on BatchNorm.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nptm.data.constants import DEFAULT_CROP_RATIO
from nptm.data.transforms import ProgressiveResize


def ffcv_imagenet_lr(epoch: float, peak_lr: float, epochs: int, peak_epoch: float = 2) -> float:
    """ffcv-imagenet 'cyclic' lr at a fractional epoch: linear from 1e-4*peak at 0 to peak at
    ``peak_epoch``, then linear to 0 at ``epochs`` (evaluate per iteration: epoch + i / iters)."""
    return float(np.interp(epoch, [0, peak_epoch, epochs], [1e-4 * peak_lr, peak_lr, 0.0]))


def _recipe(arch, epochs, batch_size, world_size, lr, weight_decay, start_ramp, end_ramp):
    return dict(
        arch=arch, epochs=epochs, batch_size=batch_size, world_size=world_size, lr=lr, lr_peak_epoch=2,
        lr_schedule="linear warm-up from 1e-4*lr to lr at epoch 2, linear decay to 0 (per iteration)",
        optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=weight_decay, bn_weight_decay=0.0,
        label_smoothing=0.1, amp_dtype="bfloat16", channels_last=True, blurpool=True,
        progressive_resize=ProgressiveResize(160, 192, start_ramp, end_ramp), val_resolution=256,
        crop_ratio=DEFAULT_CROP_RATIO, tta_flip=True,
        order="random" if world_size > 1 else "quasi_random",
        write=dict(max_resolution=500, jpeg_quality=90, compress_probability=0.5, write_mode="proportion"),
    )


# ffcv-imagenet configs (rn50_configs/, rn18_configs/); batch_size is per GPU, lr is the peak.
# Published: rn50 16 ep 73.8% / 88 ep 78.4% top-1 on 8xA100; rn18 16 ep 66.9% on 1xA100.
# ffcv-imagenet ran fp16 autocast + GradScaler; bf16 here needs no scaler.
IMAGENET_PRESET: dict[str, dict] = {
    "rn50_16": _recipe("resnet50", 16, 512, 8, 1.7, 1e-4, 11, 13),
    "rn50_88": _recipe("resnet50", 88, 512, 8, 1.7, 1e-4, 65, 76),
    "rn18_16": _recipe("resnet18", 16, 1024, 1, 0.5, 5e-5, 11, 13),
    "rn18_88": _recipe("resnet18", 88, 1024, 1, 0.5, 5e-5, 65, 76),
}


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
        optimizer="nesterov" if p["nesterov"] else "sgd",
        weight_decay=p["weight_decay"], label_smoothing=p["label_smoothing"], decay="linear",
        warmup_epochs=min(float(p["lr_peak_epoch"]), T * p["lr_peak_epoch"] / SHORTEST_RECIPE),
        progressive_resize=(float(r.min_res), float(r.max_res), r.start_ramp / p["epochs"], r.end_ramp / p["epochs"]),
        val_resolution=p["val_resolution"], tta_flip=p["tta_flip"])
    if train_resolution is not None:
        del values["progressive_resize"]
    return values

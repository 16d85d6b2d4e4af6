"""What ``python -m nptm.data write`` reads: a dataset split as indexable (image, label) pairs (``Source``). Each
dataset that can be written to a .beton file registers its ``source`` reader with it (``nptm.data.registry``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def load_rgb(path) -> np.ndarray:
    """H,W,3 uint8 array of any PIL-readable image (fully decoded, so truncation is detected)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def probe_image(path: str) -> str | None:
    try:
        load_rgb(path)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"{type(e).__name__}: {e}"
    return None


class FolderImages:
    """(image, label) pairs of an image folder; a decode failure while writing is logged to ``failure_log``."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples, self.failure_log = samples, None

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            return load_rgb(path), label
        except Exception as e:  # raising would hang ffcv's writer: log it, abort after the pass
            with open(self.failure_log, "a") as f:
                f.write(f"{path}\t{type(e).__name__}: {e}\n")
            return np.zeros((1, 1, 3), np.uint8), label


class ArrayImages:
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


@dataclass
class Source:
    data: FolderImages | ArrayImages
    num_classes: int
    description: str

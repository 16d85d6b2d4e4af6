"""A .beton of small fixed-size images decoded once into memory, to be served by ``TensorLoader``.

For CIFAR-size data, streaming the file through FFCV's pipeline every epoch costs more than it saves
(numba JIT warm-up per loader, a prefetch thread competing with torch's threads for the cores, and on
the GPU a host-side augmentation that the in-memory path does on the device); reading the file once
takes a fraction of a second (raw images are copied, JPEG ones decoded with PIL).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from nptm.data.registry import DataError

RAW, JPG = 1, 0  # ffcv.fields.rgb_image.IMAGE_MODES


def read_beton_images(path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(uint8 N,3,H,W images, int64 labels) of a .beton with 'image' and 'label' fields; None when its
    images differ in size (they then need FFCV's cropping decoders)."""
    from nptm.data.loaders.choose import ffcv_import_error

    ffcv_import_error()  # imports ffcv keeping torch's thread count
    from ffcv.reader import Reader

    try:
        reader = Reader(str(path))
        meta = reader.metadata[f"f{reader.field_names.index('image')}"]
        labels = np.array(reader.metadata[f"f{reader.field_names.index('label')}"], dtype=np.int64)
    except (OSError, ValueError, KeyError, AssertionError) as e:
        raise DataError(f"unreadable .beton file {path}: {type(e).__name__}: {e}") from None
    n = len(meta)
    if n == 0 or (meta["height"] != meta["height"][0]).any() or (meta["width"] != meta["width"][0]).any():
        return None
    h, w = int(meta["height"][0]), int(meta["width"][0])
    data = np.memmap(path, dtype=np.uint8, mode="r")
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    flat = out.reshape(n, -1)
    for i, (mode, ptr) in enumerate(zip(meta["mode"].tolist(), meta["data_ptr"].tolist())):
        if mode == RAW:
            flat[i] = data[ptr : ptr + h * w * 3]
        else:
            with Image.open(io.BytesIO(data[ptr : ptr + sizes[ptr]].tobytes())) as im:
                out[i] = np.asarray(im.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)

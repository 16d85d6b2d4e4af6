"""Convert image datasets to FFCV ``.beton`` files (fields: ``image`` RGBImageField, ``label`` IntField).

Sources: ``imagefolder:DIR`` (one sub-folder per class, labels = sorted folder names, as
torchvision's ImageFolder), ``cifar10:DIR`` / ``cifar100:DIR`` (the python pickles, DIR holding or
being ``cifar-10-batches-py`` / ``cifar-100-python``) and ``digits`` (scikit-learn's 8x8 digits,
upscaled 4x to 32x32 RGB; same train/test split as the ``digits`` dataset).

Unreadable images are found by a first, parallel decoding pass, reported by path, counted and
left out; the file is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from nptm.data.registry import DataError

KINDS = ("imagefolder", "cifar10", "cifar100", "digits")
WRITE_MODES = ("raw", "jpg", "proportion")
DIGITS_SCALE = 4


def load_rgb(path) -> np.ndarray:
    """H,W,3 uint8 array of any PIL-readable image (fully decoded, so truncation is detected)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _probe(path: str) -> str | None:
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


def _cifar_source(kind: str, path: Path, split: str) -> Source:
    from nptm.data.cifar import LAYOUTS, load_cifar

    folder = LAYOUTS[kind][0]
    data_dir = path.parent if path.name == folder and not (path / folder).is_dir() else path
    x_tr, y_tr, x_te, y_te = load_cifar(kind, str(data_dir))
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    images = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # N,3,32,32 -> N,32,32,3
    return Source(ArrayImages(images, y.numpy()), LAYOUTS[kind][4], f"{kind} {split} ({data_dir / folder})")


def _digits_source(split: str) -> Source:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from nptm.data.digits import SPLIT_SEED, TEST_FRACTION

    x, y = load_digits(return_X_y=True)
    if split != "all":
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
        x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    gray = np.rint(x.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    big = gray.repeat(DIGITS_SCALE, axis=1).repeat(DIGITS_SCALE, axis=2)
    return Source(ArrayImages(np.ascontiguousarray(np.stack([big] * 3, axis=-1)), y), 10, f"digits {split}")


def _folder_source(path: Path, workers: int) -> tuple[Source, list[tuple[str, str]]]:
    from nptm.data.loaders.folder import open_image_folder

    if not path.is_dir():
        raise DataError(f"imagefolder: {path} is not a directory")
    folder = open_image_folder(path)
    paths = [p for p, _ in folder.samples]
    with Pool(workers) as pool:
        errors = list(tqdm(pool.imap(_probe, paths, chunksize=16), total=len(paths), desc="checking images",
                           unit="img", file=sys.stderr))
    bad = [(p, e) for p, e in zip(paths, errors) if e is not None]
    for p, e in bad:
        print(f"unreadable image {p}: {e}", file=sys.stderr)
    good = [s for s, e in zip(folder.samples, errors) if e is None]
    if not good:
        raise DataError(f"imagefolder: no readable image in {path} ({len(bad)} unreadable)")
    return Source(FolderImages(good), len(folder.classes), f"imagefolder {path}"), bad


def open_source(spec: str, split: str = "train", workers: int = 1):
    """(Source, [(path, error) of unreadable images, each also printed to stderr]) for ``KIND:PATH``."""
    kind, _, path = spec.partition(":")
    if kind not in KINDS:
        raise DataError(f"unknown source kind {kind!r} in {spec!r}; use one of {', '.join(KINDS)} (KIND:PATH)")
    if kind == "digits":
        if split not in ("train", "test", "all"):
            raise DataError(f"digits split must be train, test or all, not {split!r}")
        return _digits_source(split), []
    if not path:
        raise DataError(f"source {spec!r} needs a path: {kind}:PATH")
    if kind == "imagefolder":
        return _folder_source(Path(path).expanduser(), workers)
    if split not in ("train", "test"):
        raise DataError(f"{kind} split must be train or test, not {split!r}")
    return _cifar_source(kind, Path(path).expanduser(), split), []


def _page_size(max_resolution: int | None) -> int:
    """Smallest power of two >= 4 MiB holding one raw image (ffcv needs each sample inside a page)."""
    side = max_resolution or 4096
    return max(1 << 22, 1 << (3 * side * side + (1 << 16)).bit_length())


def write_beton(source: Source, out: Path, *, write_mode: str, max_resolution: int | None, jpeg_quality: int,
                compress_probability: float, workers: int) -> None:
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    partial = out.with_name(out.name + ".partial")
    failure_log = out.with_name(out.name + ".failures")
    failure_log.unlink(missing_ok=True)
    if isinstance(source.data, FolderImages):
        source.data.failure_log = str(failure_log)
    image = RGBImageField(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality,
                          compress_probability=compress_probability)
    writer = DatasetWriter(str(partial), {"image": image, "label": IntField()},
                           page_size=_page_size(max_resolution), num_workers=workers)
    try:
        writer.from_indexed_dataset(source.data, chunksize=64)
        if failure_log.exists():
            lines = failure_log.read_text().splitlines()
            raise DataError(f"{len(lines)} image(s) became unreadable while writing, first: {lines[0]}")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
        failure_log.unlink(missing_ok=True)


def convert(spec: str, out, *, split: str = "train", write_mode: str | None = None, max_resolution: int = 500,
            jpeg_quality: int = 90, compress_probability: float = 0.5, workers: int | None = None,
            force: bool = False) -> dict:
    """Write ``spec`` to ``out``; returns counts. ``write_mode`` defaults to 'proportion' for image
    folders (ffcv-imagenet) and 'raw' (lossless) for the small fixed-size datasets."""
    out = Path(out).expanduser()
    workers = workers or os.cpu_count() or 1
    if out.exists() and not force:
        raise DataError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir():
        raise DataError(f"{out} is a directory")
    if not 1 <= jpeg_quality <= 100 or not 0 <= compress_probability <= 1 or max_resolution < 0 or workers < 1:
        raise DataError("need 1 <= --jpeg-quality <= 100, 0 <= --compress-probability <= 1, "
                        "--max-resolution >= 0 and --workers >= 1")
    from nptm.data.loaders.choose import ffcv_import_error

    if ffcv_import_error():
        raise DataError(f"writing .beton files needs ffcv, which is not importable ({ffcv_import_error()})")
    source, bad = open_source(spec, split, workers)  # reports unreadable images on stderr
    mode = write_mode or ("proportion" if isinstance(source.data, FolderImages) else "raw")
    if mode not in WRITE_MODES:
        raise DataError(f"unknown write mode {mode!r}; choose from {', '.join(WRITE_MODES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_beton(source, out, write_mode=mode, max_resolution=max_resolution or None, jpeg_quality=jpeg_quality,
                compress_probability=compress_probability, workers=workers)
    return dict(written=len(source.data), skipped=len(bad), classes=source.num_classes, source=source.description,
                out=str(out), write_mode=mode)

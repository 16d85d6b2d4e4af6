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
from pathlib import Path

from nptm.data.registry import DATASETS, DataError
from nptm.data.sources import FolderImages, Source

WRITE_MODES = ("raw", "jpg", "proportion")


def writable_kinds() -> tuple[str, ...]:
    """The datasets that can be written to .beton files (those registered with a ``source`` reader)."""
    return tuple(n for n, d in DATASETS.items() if d.source is not None)


def open_source(spec: str, split: str = "train", workers: int = 1):
    """(Source, [(path, error) of unreadable images, each also printed to stderr]) for ``KIND:PATH``."""
    kind, _, path = spec.partition(":")
    if kind not in writable_kinds():
        raise DataError(f"unknown source kind {kind!r} in {spec!r}; use one of {', '.join(writable_kinds())} "
                        f"(KIND:PATH)")
    return DATASETS[kind].source(kind, Path(path).expanduser() if path else None, split, workers)


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

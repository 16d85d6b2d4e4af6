"""The one place that decides which loader reads a dataset: FFCV ``.beton`` files streamed through
FFCV's pipeline, the same files decoded once into memory, or the fallback (image folders through
torchvision+PIL, or CIFAR's python files held in memory).

``auto`` takes the .beton files when they are there and ffcv imports: for small fixed-size images
('small' datasets) decoded into memory on the devices in ``MEMORY_FASTER``, else streamed through FFCV,
unless FFCV is the slower path on the device at hand (``FASTER_FALLBACK``); otherwise the fallback, said
in one line on stderr when .beton files were passed over. Both sets come from measurements with
``benchmarks/bench_loader.py`` (README, "Data loaders").
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

LOADERS = ("auto", "ffcv", "torchvision")

# (device type, dataset kind) where the fallback trains faster than FFCV: auto skips the .beton files there.
FASTER_FALLBACK: set[tuple[str, str]] = set()  # none on a 2-core CPU (README, "Data loaders", 2026-11-22)
# device types where a 'small' dataset's .beton trains faster decoded once into memory than streamed
MEMORY_FASTER: set[str] = {"cpu", "cuda"}


@functools.cache
def ffcv_import_error() -> str | None:
    """None when ffcv imports; otherwise why not (a missing package or a broken build).

    Importing ffcv sets torch's thread count to 1 (``ffcv.pipeline.compiler`` calls
    ``torch.set_num_threads(1)`` at import), which halved CPU training: the count is restored here,
    and every nptm module imports ffcv through this function first."""
    threads = torch.get_num_threads()
    try:
        import ffcv.fields  # noqa: F401
        import ffcv.loader  # noqa: F401
        import ffcv.reader  # noqa: F401
    except Exception as e:  # ImportError, OSError (libturbojpeg), numba/numpy mismatches
        return f"{type(e).__name__}: {e}"
    finally:
        torch.set_num_threads(threads)
    return None


def ffcv_available() -> bool:
    return ffcv_import_error() is None


def choose_loader(loader: str, root: Path, betons: tuple[str, ...], folders: tuple[str, ...], what: str, *,
                  device: str = "cpu", kind: str = "images", fallback: str = "the slower torchvision+PIL loader",
                  announce_missing: bool = True) -> str:
    """'ffcv', 'memory' (the .beton files decoded into memory) or 'torchvision' for ``loader`` in
    auto|ffcv|torchvision, given what ``root`` holds.

    ``folders``: what the fallback needs in ``root`` (checked here; empty when the fallback checks its
    own files). ``kind`` ('images' or 'small') with the device type looks up ``FASTER_FALLBACK``.
    ``announce_missing``: say on stderr that auto fell back for lack of .beton files."""
    from nptm.data.registry import DataError

    if loader not in LOADERS:
        raise DataError(f"unknown loader {loader!r}; choose from {', '.join(LOADERS)}")
    missing_betons = [n for n in betons if not (root / n).is_file()]
    missing_folders = [n + "/" for n in folders if not (root / n).is_dir()]
    slower = (torch.device(device).type, kind) in FASTER_FALLBACK and not missing_folders
    if loader == "ffcv" or (loader == "auto" and not missing_betons and ffcv_available() and not slower):
        if not ffcv_available():
            raise DataError(f"--loader ffcv: ffcv is not importable ({ffcv_import_error()})")
        if missing_betons:
            raise DataError(f"{what}: {root} lacks {', '.join(missing_betons)} "
                            f"(write them with: python -m nptm.data write --source ... --out FILE.beton)")
        return "memory" if loader == "auto" and kind == "small" and torch.device(device).type in MEMORY_FASTER \
            else "ffcv"
    if missing_folders:
        if loader == "torchvision" or not missing_betons:
            why = "" if loader == "torchvision" else f" (its .beton files need ffcv: {ffcv_import_error()})"
            raise DataError(f"{what}: {root} lacks {', '.join(missing_folders)} for the torchvision loader{why}")
        raise DataError(f"{what} not found in {root}: expected {' and '.join(betons)} (FFCV) "
                        f"or {' and '.join(n + '/' for n in folders)} image folders")
    if loader == "auto" and (announce_missing or not missing_betons):
        why = (f"no {', '.join(missing_betons)} in {root}" if missing_betons else
               f"ffcv is not importable ({ffcv_import_error()})" if not ffcv_available() else
               f"FFCV is the slower loader on {torch.device(device).type} (pass --loader ffcv to use it)")
        print(f"nptm: {why}; using {fallback}", file=sys.stderr)
    return "torchvision"

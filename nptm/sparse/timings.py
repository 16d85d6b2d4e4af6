"""This machine's layer timings, kept between runs, so that sparsifying the same layers again makes the same choice.

The best dense and sparse CPU time of a layer (kind, weight shape, conv geometry, input shape, density to 2
decimals) is measured once per machine (CPU model and count, torch version, kernel variant, timing mode) and read
back afterwards: the choice of a layer is then a function of the file, not of the load of the moment. The file is
JSON in ``$NPTM_CACHE_DIR`` (default ``~/.cache/nptm``); a file that is not what this module writes is ignored
(one warning) and rewritten. Delete it, or pass ``cache=False`` to ``sparsify``, to measure afresh."""
from __future__ import annotations

import json
import math
import os
import platform
import warnings
from pathlib import Path

import torch
from torch import nn

from nptm import ops
from nptm.sparse.dense import onednn_available
from nptm.utils.files import atomic_write_json

FILE = "sparse-timings.json"


def cache_path() -> Path:
    return Path(os.environ.get("NPTM_CACHE_DIR") or Path.home() / ".cache" / "nptm") / FILE


def machine(timing: str) -> str:
    """What the timings depend on besides the layer."""
    cpu = platform.processor()
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    except OSError:
        pass
    threads = "" if timing == "cpu" else f" {torch.get_num_threads()} threads"
    # a conv's dense time is the faster of torch's and DenseConv2d's (oneDNN; nptm's depthwise kernel since "+dw")
    dense = " dense:onednn+dw" if onednn_available() else " dense:dw"
    return f"{cpu} x{os.cpu_count()} torch {torch.__version__} {ops.sparse_conv2d_isa()} {timing}{threads}{dense}"


def layer_key(module: nn.Module, density: float, input_shapes: tuple, block: int = 1) -> str:
    """A layer's geometry, input shapes, density and the sparse form's block (unstructured and blocked weights of
    one density time differently)."""
    conv = [getattr(module, k, None) for k in ("stride", "padding", "dilation", "groups", "padding_mode")]
    return json.dumps([type(module).__name__, list(module.weight.shape), module.bias is not None, *map(str, conv),
                       [list(s) for s in input_shapes], round(density, 2)] + ([block] if block != 1 else []))


class Timings:
    """layer key -> [best dense s, best sparse s] for one machine; ``save`` merges into the file."""

    def __init__(self, timing: str, enabled: bool = True):
        self.machine, self.enabled, self.new = machine(timing), enabled, {}
        self.known = self._read() if enabled else {}

    def _read(self) -> dict[str, list[float]]:
        path = cache_path()
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            mine = data.get(self.machine, {}) if isinstance(data, dict) else None
            good = lambda v: isinstance(v, float) and math.isfinite(v) and v > 0  # noqa: E731
            if not isinstance(mine, dict) or not all(isinstance(v, list) and len(v) == 2 and all(map(good, v))
                                                     for v in mine.values()):
                raise ValueError("unexpected content")
            return mine
        except (OSError, ValueError) as e:
            warnings.warn(f"{path}: not a timings file ({e}); measuring afresh and rewriting it", stacklevel=4)
            return {}

    def get(self, key: str) -> tuple[float, float] | None:
        """The timings an earlier run kept (not this run's: identical layers of one model each measure, and pool)."""
        hit = self.known.get(key)
        return (hit[0], hit[1]) if hit else None

    def put(self, key: str, dense_s: float, sparse_s: float) -> None:
        """Keep the best of this run's timings of ``key`` (what the pooled choice of identical layers used)."""
        old = self.new.get(key, [math.inf, math.inf])
        self.new[key] = [min(old[0], float(dense_s)), min(old[1], float(sparse_s))]

    def save(self) -> None:
        if not (self.enabled and self.new):
            return
        path = cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = json.loads(path.read_text()) if path.exists() else {}
            except (OSError, ValueError):
                data = {}
            data = data if isinstance(data, dict) else {}
            mine = data.get(self.machine) if isinstance(data.get(self.machine), dict) else {}
            data[self.machine] = {**mine, **self.new}
            atomic_write_json(path, data)
        except OSError as e:  # a read-only home: the choice stands, it is just not kept
            warnings.warn(f"{path}: cannot keep the layer timings ({e})", stacklevel=4)

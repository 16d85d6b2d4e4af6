"""Atomic, weights-only checkpoints and the RNG state they carry."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nptm.utils.errors import CheckpointError
from nptm.utils.files import atomic_write
from nptm.utils.loading import load_tensors

FORMAT = "nptm-train-checkpoint/1"
__all__ = ["CheckpointError", "FORMAT", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``; a truncated, corrupt or foreign file raises CheckpointError."""
    if not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = load_tensors(path, "unreadable checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nptm.train checkpoint (expected format {FORMAT})")
    return data


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states, in weights-only-loadable types."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))

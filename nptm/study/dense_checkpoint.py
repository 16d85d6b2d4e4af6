"""``--dense-checkpoint FILE``: a trained model to start a study from, instead of training it.

Accepted layouts (read with ``weights_only=True``): a plain state dict (torchvision's ``.pth`` files),
a ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper (nested wrappers too), or the finished dense
phase checkpoint of an earlier nptm study (``checkpoints/s<seed>__dense.pt``). ``module.`` (DDP) and
``_orig_mod.`` (torch.compile) prefixes are dropped. The tensors must match the model's exactly:
the first missing, unexpected or mis-shaped tensor is named in one line.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from nptm.train.checkpoint import FORMAT, CheckpointError
from nptm.utils.loading import load_tensors

WRAPPERS = ("model", "state_dict", "model_state_dict")
PREFIXES = ("module.", "_orig_mod.")
OPTIONAL = ("num_batches_tracked",)  # BatchNorm buffers that old torchvision files lack


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items())


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict inside ``path``; CheckpointError (one line) for anything else."""
    where = f"--dense-checkpoint {path}"
    data = load_tensors(path, "--dense-checkpoint")
    if isinstance(data, dict) and data.get("format") == FORMAT and not data.get("done"):
        raise CheckpointError(f"{where} is an unfinished nptm training phase; use the checkpoint of a finished one")
    state = data
    while isinstance(state, dict) and not _is_state_dict(state):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not _is_state_dict(state):
        raise CheckpointError(f"{where} holds no state dict (tensors by name, or a {{'model': ...}} or "
                              f"{{'state_dict': ...}} wrapper around them)")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_fits(model: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """CheckpointError naming the first tensor of ``state`` that does not fit ``model``."""
    where = f"--dense-checkpoint {path} does not fit the model"
    own = model.state_dict()
    for name, t in own.items():
        if name not in state:
            if name.rsplit(".", 1)[-1] in OPTIONAL:
                continue
            raise CheckpointError(f"{where}: it lacks tensor {name!r} {tuple(t.shape)}")
        if state[name].shape != t.shape:
            raise CheckpointError(f"{where}: tensor {name!r} is {tuple(state[name].shape)} in the file but "
                                  f"{tuple(t.shape)} in the model")
    extra = next((k for k in state if k not in own), None)
    if extra is not None:
        raise CheckpointError(f"{where}: the model has no tensor {extra!r} {tuple(state[extra].shape)}")


def load_dense_checkpoint(model: nn.Module, path: str | Path, state: dict[str, Tensor] | None = None) -> nn.Module:
    """Load ``path`` (or its already read ``state``) into ``model`` after checking that it fits."""
    state = read_state_dict(path) if state is None else state
    check_fits(model, state, path)
    model.load_state_dict(state, strict=False)  # strictness checked above (optional buffers may be absent)
    return model

"""Reading a tensor file that may be anything: ``torch.load(weights_only=True)`` (it never runs code from the file),
every failure as one ``CheckpointError`` line that says what is wrong with the file, never torch's advice to load it
with ``weights_only=False``."""
from __future__ import annotations

import os
import re
from typing import Any

import torch

from nptm.utils.errors import CheckpointError


def load_tensors(path: str | os.PathLike, what: str = "") -> Any:
    """What ``path`` holds (tensors, plain containers and numbers), read on the CPU. ``what`` prefixes the message
    (e.g. "--dense-checkpoint")."""
    where = f"{what} {os.fspath(path)}".strip()
    if os.path.isdir(path):
        raise CheckpointError(f"{where} is a folder, not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{where} does not exist") from None
    except PermissionError:
        raise CheckpointError(f"{where} cannot be read (permission denied)") from None
    except Exception as e:  # noqa: BLE001  (a bad file fails in many ways: KeyError, EOFError, RuntimeError, ...)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{where} holds a Python object ({found.group(1)}), not only tensors; nptm does not "
                                  "load such files, as that could run code from them: save the model's state_dict() "
                                  "instead") from None
        raise CheckpointError(f"{where}: not a PyTorch checkpoint: truncated or corrupt") from None

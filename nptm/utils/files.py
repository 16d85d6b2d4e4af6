"""Atomic file writes (a reader, or a process killed mid-write, never sees a partial file) and config files read
with one-line errors."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

from nptm.utils.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into a temp file in the same folder, fsync it, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make results private
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1) -> None:
    text = json.dumps(data, indent=indent).encode()
    atomic_write(path, lambda f: f.write(text))


def load_config_file(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML or JSON file ({} when empty); a one-line ConfigError for anything else."""
    import yaml

    try:
        text = Path(path).read_text()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"malformed config file {path}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"malformed config file {path}: expected a mapping at the top level")
    return data

"""Atomic file writes (a reader, or a process killed mid-write, never sees a partial file) and config files read
with one-line errors."""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, IO

from nptm.utils.errors import ConfigError
from nptm.utils.processes import process_start, running

TEMP_MAX_AGE_S = 600.0  # a temp file this old is an orphan whoever wrote it
_WRITER = re.compile(r"\.w(\d+)-(\w+)@([\w-]*)\.\w+\.tmp$")  # see _writer_tag


def _writer_tag() -> str:
    """Who writes a temp file: pid, its start time and host, so a later process can tell whether the writer is gone."""
    host = re.sub(r"[^\w-]", "-", socket.gethostname())
    return f"w{os.getpid()}-{process_start(os.getpid()) or 0}@{host}"


def _orphan(tmp: Path, host: str, now: float) -> bool:
    m = _WRITER.search(tmp.name)
    if m is not None and m[3] == host and not running(int(m[1]), None if m[2] == "0" else m[2]):
        return True
    return now - tmp.stat().st_mtime > TEMP_MAX_AGE_S


def remove_temps(folder: Path, orphans_only: bool = True) -> None:
    """Delete the temp files of atomic writes cut short under ``folder`` (recursively): all of them, or with
    ``orphans_only`` those whose writer on this host is gone or that are older than ``TEMP_MAX_AGE_S``."""
    host, now = re.sub(r"[^\w-]", "-", socket.gethostname()), time.time()
    for tmp in Path(folder).rglob(".*.tmp"):
        try:
            if not orphans_only or _orphan(tmp, host, now):
                tmp.unlink()
        except OSError:  # gone meanwhile, or not ours to delete
            pass


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into a temp file in the same folder, fsync it, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer_tag()}.",
                               suffix=".tmp")
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

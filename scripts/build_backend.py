"""PEP 517 backend: setuptools, with the build's torch pinned to the torch already installed where nptm goes.

pip builds in an isolated environment; given a plain ``torch`` requirement it would compile nptm._C against
the newest torch, and the extension would then not load beside the user's torch. pip runs these hooks
with the target environment's interpreter, so ``python -I`` there sees the torch installed in it. With no
torch installed, the newest allowed torch is used, and the wheel pins it (setup.py).
"""
from __future__ import annotations

import subprocess
import sys

from setuptools.build_meta import *  # noqa: F401,F403  (every other hook as setuptools has it)

TORCH_FLOOR = "torch>=2.11"
_PROBE = "import importlib.metadata as m; print(m.version('torch'))"


def installed_torch() -> str | None:
    """The torch version installed in the interpreter running this build, ignoring the build's own paths."""
    try:
        out = subprocess.run([sys.executable, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def torch_requirement() -> str:
    version = installed_torch()
    print(f"nptm: compiling against torch {version or '(newest, none installed)'}", file=sys.stderr, flush=True)
    # === (exact string): "==2.13.0" would also accept 2.13.0+cpu, a CPU-only torch, for a CUDA one
    return f"torch==={version}" if version else TORCH_FLOOR


# setuptools' own versions of these hooks run setup.py, which needs torch: answer without it.
def get_requires_for_build_wheel(config_settings=None):
    return [torch_requirement()]


def get_requires_for_build_editable(config_settings=None):
    return [torch_requirement()]


def get_requires_for_build_sdist(config_settings=None):
    return [TORCH_FLOOR]

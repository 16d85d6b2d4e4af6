import subprocess
import sys

import torch

from nptm.ops._torch_check import torch_mismatch


def test_same_release_passes_and_another_is_named():
    assert torch_mismatch("2.13.0+cu130", True, running="2.13.0+cu130") is None
    assert torch_mismatch("2.13.0+cu130", False, running="2.13.0+cpu") is None  # CPU kernels only: the release decides
    why = torch_mismatch("2.14.1+cu132", False, running="2.13.0+cu130")
    assert "torch 2.14.1+cu132" in why and "torch 2.13.0+cu130" in why and "pip install --force-reinstall --no-deps ." in why
    assert "\n" not in why
    assert torch_mismatch("2.13.0+cu130", True, running="2.13.0+cpu") is not None  # CUDA kernels need the CUDA build


def test_import_with_another_torch_fails_in_one_line():
    # Fake an extension built against another torch: importing nptm.ops must refuse before loading nptm._C.
    code = ("import sys, types; sys.modules['nptm._build_info'] = types.SimpleNamespace("
            "TORCH_VERSION='1.0.0', CUDA_KERNELS=False); import nptm.ops")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: nptm._C was built against torch 1.0.0 but torch ") and torch.__version__ in last
    assert "pip install --force-reinstall --no-deps ." in last

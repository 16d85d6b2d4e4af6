"""Kernel-test devices: cpu, cuda (with a GPU), and "emu": the CUDA kernels and their host code run on
CPU tensors by the emulator (the test-only ops torch.ops.nptm._emu_*), swapped in for the real ops.

Test modules here import this file as ``conftest``: it re-exports the shared helpers of tests/conftest.py.
"""
import importlib.util
import re
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("_tests_conftest", Path(__file__).parent.parent / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
FLOAT_DTYPES, GPU, assert_bitwise_equal = _shared.FLOAT_DTYPES, _shared.GPU, _shared.assert_bitwise_equal

EMULATED_OPS = ("apply_masks_", "global_magnitude_masks", "gather_channels")
_emulated = {"passed": 0, "failed": 0, "calls": 0}


def _counted(op):
    def call(*args, **kwargs):
        _emulated["calls"] += 1
        return op(*args, **kwargs)

    return call


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not GPU, reason="needs a GPU and the CUDA kernels")), "emu"])
def device(request, monkeypatch):
    """The device tensors live on; with "emu" (tensors on cpu) torch.ops.nptm.* run the emulated CUDA code."""
    if request.param != "emu":
        return request.param
    for name in EMULATED_OPS:
        monkeypatch.setattr(torch.ops.nptm, name, _counted(getattr(torch.ops.nptm, "_emu_" + name)))
    return "cpu"


def pytest_runtest_logreport(report):
    if report.when == "call" and re.search(r"[\[-]emu[\]-]", report.nodeid):
        _emulated["passed" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    if _emulated["passed"] or _emulated["failed"]:
        terminalreporter.write_line(
            f"emulated CUDA kernels: {_emulated['passed']} test cases passed, {_emulated['failed']} failed, "
            f"{_emulated['calls']} kernel op calls on the CPU emulator"
        )


@pytest.fixture
def emulated(request, device):
    """Whether this test runs the emulated CUDA code (its chunks are 32x smaller than on the GPU)."""
    return request.node.callspec.params.get("device") == "emu"

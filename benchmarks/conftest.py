"""pytest-benchmark setup: collect ``bench_*.py``, parametrize each over (device, spec, impl).

Run with ``python -m pytest benchmarks --benchmark-only`` (quick budgets; ``--bench-full`` for all
workloads and the full budget). The main ``tests/`` run never collects these files.
"""
import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
for p in (HERE, os.path.dirname(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from harness import Budget  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true", help="nptm: every workload with run.py's full budget")


def pytest_collect_file(file_path, parent):
    if file_path.name.startswith("bench_") and file_path.suffix == ".py":
        return pytest.Module.from_parent(parent, path=file_path)


def devices():
    from nptm.ops import has_cuda_kernels

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() and has_cuda_kernels() else [])


def pytest_generate_tests(metafunc):
    if {"device", "spec", "impl"} <= set(metafunc.fixturenames) and hasattr(metafunc.module, "specs"):
        full = metafunc.config.getoption("--bench-full")
        params = [
            pytest.param(d, s, impl, id=f"{d}-{s.id}-{impl}")
            for d in devices()
            for s in metafunc.module.specs(d, full)
            for impl in s.impls
        ]
        metafunc.parametrize("device,spec,impl", params)


@pytest.fixture
def budget(request, device):
    return Budget.for_run(not request.config.getoption("--bench-full"), device)

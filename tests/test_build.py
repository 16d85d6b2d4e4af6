import os
import shutil

import pytest
import torch

from nptm import ops


def test_ops_registered():
    for name in ("apply_masks_", "global_magnitude_masks", "gather_channels"):
        assert hasattr(torch.ops.nptm, name)


@pytest.mark.skipif(not (shutil.which("nvcc") and torch.version.cuda), reason="no nvcc or CPU-only torch: CPU-only build expected")
def test_cuda_kernels_compiled_when_nvcc_present():
    # CI has nvcc and a CUDA build of torch: the CUDA kernels must have been compiled and linked.
    assert ops.has_cuda_kernels()


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI must compile the CUDA code")
def test_ci_builds_cuda():
    assert shutil.which("nvcc") and torch.version.cuda and ops.has_cuda_kernels()

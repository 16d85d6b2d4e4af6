import os

import pytest
import torch

from nptm.ops import has_cuda_kernels

GPU = torch.cuda.is_available() and has_cuda_kernels()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not GPU, reason="needs a GPU and the CUDA kernels"))]
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    """Same shape, dtype and bits (NaN payloads and signed zeros included)."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    if a.dtype.is_floating_point:
        itype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(itype), b.contiguous().view(itype)
    assert torch.equal(a.cpu(), b.cpu())


@pytest.fixture(autouse=True, scope="session")
def own_timings_cache(tmp_path_factory):
    """nptm.sparsify keeps layer timings in $NPTM_CACHE_DIR (default ~/.cache/nptm): tests keep theirs apart."""
    before = os.environ.get("NPTM_CACHE_DIR")
    os.environ["NPTM_CACHE_DIR"] = str(tmp_path_factory.mktemp("nptm-cache"))
    yield
    if before is None:
        os.environ.pop("NPTM_CACHE_DIR")
    else:
        os.environ["NPTM_CACHE_DIR"] = before


TINY_TRAINING = ("train", "study")  # test folders that train tiny models


@pytest.fixture(autouse=True)
def one_torch_thread(request):
    """Tests that train tiny models run with one intra-op thread: fastest, and immune to oversubscribed CI cores."""
    if request.path.parent.name not in TINY_TRAINING:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

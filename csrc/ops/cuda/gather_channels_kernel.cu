// gather_channels on CUDA: the kernels and host code of gather_channels_kernels.cuh on the GPU backend.
#include <torch/library.h>

#include "gather_channels_kernels.cuh"

namespace nptm::ops {
TORCH_LIBRARY_IMPL(nptm, CUDA, m) { m.impl("gather_channels", TORCH_FN(gpu::gather_channels_impl<gpu::Backend>)); }
}  // namespace nptm::ops

// apply_masks_ on CUDA: the kernel and host code of apply_masks_kernels.cuh on the GPU backend.
#include <torch/library.h>

#include "apply_masks_kernels.cuh"

namespace nptm::ops {
TORCH_LIBRARY_IMPL(nptm, CUDA, m) { m.impl("apply_masks_", TORCH_FN(gpu::apply_masks_impl<gpu::Backend>)); }
}  // namespace nptm::ops

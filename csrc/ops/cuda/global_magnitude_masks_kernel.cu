// global_magnitude_masks on CUDA: the kernels and host code of global_magnitude_masks_kernels.cuh on
// the GPU backend.
#include <torch/library.h>

#include "global_magnitude_masks_kernels.cuh"

namespace nptm::ops {
TORCH_LIBRARY_IMPL(nptm, CUDA, m) {
  m.impl("global_magnitude_masks", TORCH_FN(gpu::global_magnitude_masks_impl<gpu::Backend>));
}
}  // namespace nptm::ops

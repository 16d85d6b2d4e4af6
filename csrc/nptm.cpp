// Python module nptm._C: loading it registers the torch.ops.nptm.* operators.
#include <torch/extension.h>

#include "ops/ops.h"

namespace {
bool has_cuda_kernels() {
#ifdef NPTM_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "nptm kernels: fused mask application, global top-k magnitude selection, channel gathering, sparse convolution";
  m.def("has_cuda_kernels", &has_cuda_kernels, "Whether the CUDA kernels were compiled in.");
  m.def("sparse_conv2d_isa", &nptm::ops::sparse_conv2d_isa, "The ISA variant sparse_conv2d runs now (CPU flags, NPTM_DISABLE_* env).");
}

// Test-only op nptm::_emu_gather_channels: the CUDA kernels and host code of gather_channels run by
// the CPU emulator on CPU tensors.
#define NPTM_EMULATE
#include <torch/library.h>

#include "../cuda/gather_channels_kernels.cuh"

namespace nptm::ops::emu {
namespace {
std::vector<at::Tensor> emu_gather_channels(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices, bool synchronous_check) {
  for (const auto& t : tensors) TORCH_CHECK_VALUE(t.is_cpu(), "_emu_gather_channels: the emulator runs on CPU tensors");
  return gather_channels_impl<Backend>(tensors, dims, indices, synchronous_check);
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  m.def("_emu_gather_channels(Tensor[] tensors, int[] dims, Tensor[] indices, bool synchronous_check=True) -> Tensor[]");
}
TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) { m.impl("_emu_gather_channels", TORCH_FN(emu_gather_channels)); }
}  // namespace nptm::ops::emu

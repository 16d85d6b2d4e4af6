// Test-only op nptm::_emu_apply_masks_: the CUDA kernel and host code of apply_masks_ run by the
// CPU emulator on CPU tensors. Also: the emulated plan cache's counters, and a switch that makes the
// emulated backend report CUDA graph capture.
#define NPTM_EMULATE
#include <torch/library.h>

#include "../cuda/apply_masks_kernels.cuh"

namespace nptm::ops::emu {
namespace {

void emu_apply_masks(at::TensorList tensors, at::TensorList masks) {
  for (const auto& t : tensors) TORCH_CHECK_VALUE(t.is_cpu(), "_emu_apply_masks_: the emulator runs on CPU tensors");
  apply_masks_impl<Backend>(tensors, masks);
}

std::vector<int64_t> plan_stats() { return plan_cache<Backend>().stats(); }

void pretend_capturing(bool on) { Backend::pretend_capturing = on; }

}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  m.def("_emu_apply_masks_(Tensor(a!)[] tensors, Tensor[] masks) -> ()");
  m.def("_emu_apply_masks_plan_stats() -> int[]", &plan_stats);
  m.def("_emu_pretend_capturing(bool on) -> ()", &pretend_capturing);
}
TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) { m.impl("_emu_apply_masks_", TORCH_FN(emu_apply_masks)); }

}  // namespace nptm::ops::emu

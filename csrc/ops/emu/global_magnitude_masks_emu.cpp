// Test-only op nptm::_emu_global_magnitude_masks: the CUDA kernels and host code of
// global_magnitude_masks run by the CPU emulator on CPU tensors; nptm::_emu_global_magnitude_masks_last_path:
// which select the last call on this thread ran (last_select_path: "sample", "miss", "overflow", "radix").
#define NPTM_EMULATE
#include <torch/library.h>

#include "../cuda/global_magnitude_masks_kernels.cuh"

namespace nptm::ops::emu {
namespace {
std::vector<at::Tensor> emu_global_magnitude_masks(at::TensorList scores, at::TensorList masks, int64_t k, bool use_abs,
                                                   std::optional<double> fraction) {
  for (const auto& t : scores) TORCH_CHECK_VALUE(t.is_cpu(), "_emu_global_magnitude_masks: the emulator runs on CPU tensors");
  if (scores.empty())
    TORCH_CHECK_VALUE(check_global_magnitude_masks(scores, masks, k, fraction).of(0) == 0, "global_magnitude_masks: k must be 0 for an empty list");
  return global_magnitude_masks_impl<Backend>(scores, masks, k, use_abs, fraction);
}
std::string emu_last_path() { return last_select_path; }
}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  m.def("_emu_global_magnitude_masks(Tensor[] scores, Tensor[] masks, int k, bool use_abs, float? fraction=None) -> Tensor[]");
  m.def("_emu_global_magnitude_masks_last_path() -> str", &emu_last_path);
}
TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) { m.impl("_emu_global_magnitude_masks", TORCH_FN(emu_global_magnitude_masks)); }
}  // namespace nptm::ops::emu

#include "ops.h"

#include <torch/library.h>

#include "checks.h"

namespace nptm::ops {

void check_global_magnitude_masks(at::TensorList scores, at::TensorList masks, int64_t k, bool mixed_dtypes) {
  TORCH_CHECK_VALUE(masks.empty() || masks.size() == scores.size(), "global_magnitude_masks: ", scores.size(), " tensors but ", masks.size(), " masks");
  TORCH_CHECK_VALUE(k >= 0, "global_magnitude_masks: k must be >= 0, got ", k);
  if (scores.empty()) return;
  common_device(scores, masks, "global_magnitude_masks");
  const auto dtype = scores[0].scalar_type();
  for (size_t i = 0; i < scores.size(); ++i) {
    TORCH_CHECK_VALUE(is_float_dtype(scores[i].scalar_type()), "global_magnitude_masks: unsupported dtype ", scores[i].scalar_type());
    TORCH_CHECK_VALUE(mixed_dtypes || scores[i].scalar_type() == dtype, "global_magnitude_masks: tensor ", i, " is ", scores[i].scalar_type(), " but tensor 0 is ", dtype);
    if (!masks.empty()) {
      TORCH_CHECK_VALUE(is_mask_dtype(masks[i].scalar_type()), "global_magnitude_masks: mask ", i, " must be bool or uint8, got ", masks[i].scalar_type());
      TORCH_CHECK_VALUE(masks[i].numel() == scores[i].numel(), "global_magnitude_masks: mask ", i, " has ", masks[i].numel(), " elements but tensor ", i, " has ", scores[i].numel());
    }
  }
}

namespace {
// Empty lists dispatch to no backend; any other device lacks a kernel.
std::vector<at::Tensor> global_magnitude_masks_composite(at::TensorList scores, at::TensorList masks, int64_t k, bool) {
  check_global_magnitude_masks(scores, masks, k);
  TORCH_CHECK_VALUE(scores.empty() ? k == 0 : false, scores.empty() ? "global_magnitude_masks: k must be 0 for an empty list" : "global_magnitude_masks: no kernel for this device");
  return {};
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  m.def("global_magnitude_masks(Tensor[] scores, Tensor[] masks, int k, bool use_abs) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) {
  m.impl("global_magnitude_masks", TORCH_FN(global_magnitude_masks_composite));
}

}  // namespace nptm::ops

#include "ops.h"

#include <torch/library.h>

#include "checks.h"

namespace nptm::ops {

PruneCount check_global_magnitude_masks(at::TensorList scores, at::TensorList masks, int64_t k, std::optional<double> fraction, bool mixed_dtypes) {
  TORCH_CHECK_VALUE(masks.empty() || masks.size() == scores.size(), "global_magnitude_masks: ", scores.size(), " tensors but ", masks.size(), " masks");
  if (fraction) {
    TORCH_CHECK_VALUE(k == -1, "global_magnitude_masks: pass k=-1 with a fraction, got k=", k);
    TORCH_CHECK_VALUE(*fraction >= 0 && *fraction <= 1, "global_magnitude_masks: fraction must be in [0, 1], got ", *fraction);
  } else {
    TORCH_CHECK_VALUE(k >= 0, "global_magnitude_masks: k must be >= 0, got ", k);
  }
  const PruneCount count{k, fraction.value_or(0)};
  if (scores.empty()) return count;
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
  return count;
}

namespace {
// Empty lists dispatch to no backend; any other device lacks a kernel.
std::vector<at::Tensor> global_magnitude_masks_composite(at::TensorList scores, at::TensorList masks, int64_t k, bool, std::optional<double> fraction) {
  const PruneCount count = check_global_magnitude_masks(scores, masks, k, fraction);
  TORCH_CHECK_VALUE(scores.empty() ? count.of(0) == 0 : false, scores.empty() ? "global_magnitude_masks: k must be 0 for an empty list" : "global_magnitude_masks: no kernel for this device");
  return {};
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  m.def("global_magnitude_masks(Tensor[] scores, Tensor[] masks, int k, bool use_abs, float? fraction=None) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) {
  m.impl("global_magnitude_masks", TORCH_FN(global_magnitude_masks_composite));
}

}  // namespace nptm::ops

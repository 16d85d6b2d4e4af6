#include "ops.h"

#include <torch/library.h>

#include "checks.h"

namespace nptm::ops {

void check_apply_masks(at::TensorList tensors, at::TensorList masks) {
  TORCH_CHECK_VALUE(tensors.size() == masks.size(), "apply_masks_: ", tensors.size(), " tensors but ", masks.size(), " masks");
  if (tensors.empty()) return;
  common_device(tensors, masks, "apply_masks_");
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK_VALUE(is_float_dtype(tensors[i].scalar_type()), "apply_masks_: tensor ", i, " has unsupported dtype ", tensors[i].scalar_type());
    TORCH_CHECK_VALUE(is_mask_dtype(masks[i].scalar_type()), "apply_masks_: mask ", i, " must be bool or uint8, got ", masks[i].scalar_type());
    TORCH_CHECK_VALUE(masks[i].numel() == tensors[i].numel(), "apply_masks_: mask ", i, " has ", masks[i].numel(), " elements but tensor ", i, " has ", tensors[i].numel());
  }
}

namespace {
// Reference semantics for backends without a kernel (and empty lists, which dispatch to no backend).
void apply_masks_composite(at::TensorList tensors, at::TensorList masks) {
  check_apply_masks(tensors, masks);
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].masked_fill_(masks[i].reshape(tensors[i].sizes()).logical_not(), 0);
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  m.def("apply_masks_(Tensor(a!)[] tensors, Tensor[] masks) -> ()");
}

TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) { m.impl("apply_masks_", TORCH_FN(apply_masks_composite)); }

}  // namespace nptm::ops

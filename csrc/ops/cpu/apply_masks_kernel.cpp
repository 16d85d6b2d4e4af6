// PLACEHOLDER (ATen composite) until the OpenMP kernel lands.
#include <torch/library.h>

#include "../ops.h"

namespace nptm::ops {
namespace {
void apply_masks_cpu(at::TensorList tensors, at::TensorList masks) {
  check_apply_masks(tensors, masks);
  for (size_t i = 0; i < tensors.size(); ++i)
    tensors[i].masked_fill_(masks[i].reshape(tensors[i].sizes()).logical_not(), 0);
}
}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("apply_masks_", TORCH_FN(apply_masks_cpu)); }
}  // namespace nptm::ops

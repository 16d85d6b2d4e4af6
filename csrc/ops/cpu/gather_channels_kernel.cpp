// PLACEHOLDER (ATen composite) until the OpenMP kernel lands.
#include <torch/library.h>

#include "../ops.h"

namespace nptm::ops {
namespace {
std::vector<at::Tensor> gather_channels_cpu(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices) {
  const auto d = check_gather_channels(tensors, dims, indices);
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < tensors.size(); ++i) out.push_back(tensors[i].index_select(d[i], indices[i]).contiguous());
  return out;
}
}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("gather_channels", TORCH_FN(gather_channels_cpu)); }
}  // namespace nptm::ops

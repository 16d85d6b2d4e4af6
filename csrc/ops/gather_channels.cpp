#include "ops.h"

#include <torch/library.h>

#include "checks.h"

namespace nptm::ops {

std::vector<int64_t> check_gather_channels(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices) {
  TORCH_CHECK_VALUE(tensors.size() == dims.size() && tensors.size() == indices.size(), "gather_channels: ", tensors.size(), " tensors, ", dims.size(), " dims, ", indices.size(), " indices");
  std::vector<int64_t> out(dims.size());
  if (tensors.empty()) return out;
  common_device(tensors, indices, "gather_channels");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto nd = tensors[i].dim();
    TORCH_CHECK_INDEX(nd > 0, "gather_channels: tensor ", i, " is 0-dimensional");
    TORCH_CHECK_INDEX(dims[i] >= -nd && dims[i] < nd, "gather_channels: dim ", dims[i], " out of range for tensor ", i, " with ", nd, " dims");
    out[i] = dims[i] < 0 ? dims[i] + nd : dims[i];
    const auto& idx = indices[i];
    TORCH_CHECK_VALUE(idx.dim() == 1 && (idx.scalar_type() == at::kLong || idx.scalar_type() == at::kInt), "gather_channels: index ", i, " must be a 1-D int64 or int32 tensor");
  }
  return out;
}

namespace {
// Reference semantics for backends without a kernel (and empty lists, which dispatch to no backend).
std::vector<at::Tensor> gather_channels_composite(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices, bool) {
  const auto d = check_gather_channels(tensors, dims, indices);
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < tensors.size(); ++i) out.push_back(tensors[i].index_select(d[i], indices[i]).contiguous());
  return out;
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  // synchronous_check: out-of-range indices raise IndexError during the call (on CUDA: one host sync);
  // false: no sync, a CUDA device assert fires instead (reported at the next sync). CPU always raises.
  m.def("gather_channels(Tensor[] tensors, int[] dims, Tensor[] indices, bool synchronous_check=True) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(nptm, CompositeExplicitAutograd, m) { m.impl("gather_channels", TORCH_FN(gather_channels_composite)); }

}  // namespace nptm::ops

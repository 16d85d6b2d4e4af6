// PLACEHOLDER (ATen composite, concatenates) until the radix-select kernel lands.
#include <torch/library.h>

#include "../ops.h"

namespace nptm::ops {
namespace {
std::vector<at::Tensor> global_magnitude_masks_cpu(at::TensorList scores, at::TensorList masks, int64_t k, bool use_abs) {
  check_global_magnitude_masks(scores, masks, k);
  std::vector<at::Tensor> flat, alive;
  for (size_t i = 0; i < scores.size(); ++i) {
    auto s = scores[i].reshape(-1).to(at::kDouble);
    flat.push_back(use_abs ? s.abs() : s);
    alive.push_back(masks.empty() ? at::ones_like(s, at::kBool) : masks[i].reshape(-1).to(at::kBool));
  }
  auto all = at::cat(flat), live = at::cat(alive);
  auto idx = live.nonzero().squeeze(1);
  TORCH_CHECK_VALUE(k <= idx.numel(), "global_magnitude_masks: k=", k, " but only ", idx.numel(), " entries are alive");
  auto order = std::get<1>(all.index_select(0, idx).sort(/*stable=*/true, 0, false));
  live.index_fill_(0, idx.index_select(0, order.slice(0, 0, k)), false);
  std::vector<at::Tensor> out;
  int64_t off = 0;
  for (const auto& s : scores) {
    out.push_back(live.slice(0, off, off + s.numel()).reshape(s.sizes()).clone());
    off += s.numel();
  }
  return out;
}
}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("global_magnitude_masks", TORCH_FN(global_magnitude_masks_cpu)); }
}  // namespace nptm::ops

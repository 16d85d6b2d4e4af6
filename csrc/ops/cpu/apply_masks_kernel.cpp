// apply_masks_ on CPU: one OpenMP loop over the (tensor, chunk) work items of the whole list, so
// many small tensors and one huge tensor both spread over all threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../apply_masks_plan.h"
#include "../ops.h"

namespace nptm::ops {
namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per work item

// Works on the bit pattern: +0.0 is all-zero bits in every float format. Branch-free: x &= keep ? ~0 : 0
// (gcc -O3 vectorizes this form for all three widths, the ternary not for 64-bit).
template <typename Bits>
void zero_pruned(Bits* __restrict x, const uint8_t* __restrict m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] &= Bits(0) - Bits(m[j] != 0);
}

void zero_pruned(const FlatMasked& f) {
  switch (f.elem_size) {
    case 2: return zero_pruned(static_cast<uint16_t*>(f.data), f.mask, f.numel);
    case 4: return zero_pruned(static_cast<uint32_t*>(f.data), f.mask, f.numel);
    default: return zero_pruned(static_cast<uint64_t*>(f.data), f.mask, f.numel);
  }
}

void apply_masks_cpu(at::TensorList tensors, at::TensorList masks) {
  check_apply_masks(tensors, masks);
  if (tensors.empty()) return;
  const auto plan = plan_apply_masks(tensors, masks);
  plan.apply_strided(tensors, masks);
  std::vector<FlatMasked> items;  // chunks of the tensors, each a slice of one tensor
  for (const auto& f : plan.flat)
    for (int64_t b = 0; b < f.numel; b += kChunk)
      items.push_back({static_cast<char*>(f.data) + b * f.elem_size, f.mask + b, std::min(kChunk, f.numel - b), f.elem_size});
  const auto n_items = static_cast<int64_t>(items.size());
#pragma omp parallel for schedule(dynamic) num_threads(at::get_num_threads()) if (n_items > 1)
  for (int64_t c = 0; c < n_items; ++c) zero_pruned(items[c]);
}

}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("apply_masks_", TORCH_FN(apply_masks_cpu)); }
}  // namespace nptm::ops

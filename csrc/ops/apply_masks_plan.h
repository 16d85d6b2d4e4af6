// Host-side plan shared by the CPU and CUDA apply_masks_ kernels: which tensors the fused kernel
// walks linearly (with a mask in the same memory order) and which take the ATen fallback.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <vector>

namespace nptm::ops {

// A tensor's storage walked linearly: data[j] is zeroed where mask[j] == 0, for j < numel.
struct FlatMasked {
  void* data;
  const uint8_t* mask;
  int64_t numel;
};

struct ApplyMasksPlan {
  std::vector<FlatMasked> flat;
  std::vector<size_t> strided;   // indices of tensors that need the masked_fill_ fallback
  std::vector<at::Tensor> masks;  // owns the mask copies `flat` points into
};

// Dims ordered by decreasing stride, when that order makes t contiguous (t non-overlapping and dense:
// contiguous, channels_last, transposed...). Its storage is then t.permute(order) in row-major order.
inline std::optional<std::vector<int64_t>> memory_order(const at::Tensor& t) {
  std::vector<int64_t> order(t.dim());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return t.stride(a) > t.stride(b); });
  if (!t.permute(order).is_contiguous()) return std::nullopt;
  return order;
}

// Call after check_apply_masks. Empty tensors are dropped.
inline ApplyMasksPlan plan_apply_masks(at::TensorList tensors, at::TensorList masks) {
  ApplyMasksPlan plan;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (t.numel() == 0) continue;
    at::Tensor m = masks[i];
    if (!t.is_contiguous()) {
      const auto order = memory_order(t);
      if (!order) {
        plan.strided.push_back(i);
        continue;
      }
      m = m.reshape(t.sizes()).permute(*order);
    }
    plan.masks.push_back(m.contiguous());
    plan.flat.push_back({t.data_ptr(), static_cast<const uint8_t*>(plan.masks.back().const_data_ptr()), t.numel()});
  }
  return plan;
}

// The reference semantics, for tensors the fused kernels do not walk.
inline void apply_mask_strided(const at::Tensor& t, const at::Tensor& mask) {
  t.masked_fill_(mask.reshape(t.sizes()).logical_not(), 0);
}

}  // namespace nptm::ops

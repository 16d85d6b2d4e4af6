// Host-side plan shared by the CPU, CUDA and emulated apply_masks_ kernels: which tensors the fused
// kernel walks linearly (with a mask in the same memory order) and which take the ATen fallback.
// Tensors whose memory overlaps (one storage listed twice) are never walked by two work items: the
// same view listed several times becomes one entry masked by the AND of its masks; other overlaps
// go to the (sequential) fallback. Either way an entry ends zero when any of its masks prunes it.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

namespace nptm::ops {

// A tensor's storage walked linearly: data[j] is zeroed where mask[j] == 0, for j < numel.
struct FlatMasked {
  void* data;
  const uint8_t* mask;
  int64_t numel;
  int64_t elem_size;  // 2, 4 or 8 bytes: the kernels zero bit patterns
};

// A mask the plan owns, in its tensor's memory order: the AND of masks[i] for i in `sources`
// (viewed as `sizes`, dims permuted by `order`). Refreshed from the masks' contents every call.
struct OwnedMask {
  at::Tensor data;
  std::vector<size_t> sources;
  std::vector<int64_t> sizes, order;
};

struct ApplyMasksPlan {
  std::vector<FlatMasked> flat;
  std::vector<size_t> strided;  // tensors that need the masked_fill_ fallback
  std::vector<OwnedMask> owned;  // masks `flat` points into, where the given ones cannot be walked

  void refresh(at::TensorList masks) const {
    for (const auto& o : owned) {
      auto view = [&](size_t i) { return masks[i].reshape(o.sizes).permute(o.order); };
      at::Tensor out = o.data;  // a handle: writes go to the plan's buffer
      if (o.sources.size() == 1) {
        out.copy_(view(o.sources[0]));
        continue;
      }
      at::logical_and_out(out, view(o.sources[0]), view(o.sources[1]));
      for (size_t s = 2; s < o.sources.size(); ++s) at::logical_and_out(out, out, view(o.sources[s]));
    }
  }
  // The reference semantics, one tensor at a time, for the tensors the fused kernels do not walk.
  void apply_strided(at::TensorList tensors, at::TensorList masks) const {
    for (const auto i : strided) tensors[i].masked_fill_(masks[i].reshape(tensors[i].sizes()).logical_not(), 0);
  }
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

// Groups of the non-empty tensors whose byte ranges overlap, in order of address.
inline std::vector<std::vector<size_t>> overlapping_groups(at::TensorList tensors) {
  struct Span {
    uintptr_t begin, end;
    size_t i;
  };
  std::vector<Span> spans;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (t.numel() == 0) continue;
    int64_t extent = 1;
    for (int64_t d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
    const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    spans.push_back({begin, begin + static_cast<uintptr_t>(extent * t.element_size()), i});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin || (a.begin == b.begin && a.i < b.i); });
  std::vector<std::vector<size_t>> groups;
  uintptr_t end = 0;
  for (const auto& s : spans) {
    if (groups.empty() || s.begin >= end) groups.emplace_back();
    groups.back().push_back(s.i);
    end = groups.back().size() == 1 ? s.end : std::max(end, s.end);
  }
  return groups;
}

inline bool same_view(const at::Tensor& a, const at::Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.sizes() == b.sizes() && a.strides() == b.strides() && a.element_size() == b.element_size();
}

// Call after check_apply_masks. Empty tensors are dropped.
inline ApplyMasksPlan plan_apply_masks(at::TensorList tensors, at::TensorList masks) {
  ApplyMasksPlan plan;
  for (auto& group : overlapping_groups(tensors)) {
    std::sort(group.begin(), group.end());
    const auto& t = tensors[group[0]];
    const auto order = memory_order(t);
    const bool one_view = std::all_of(group.begin(), group.end(), [&](size_t i) { return same_view(tensors[i], t); });
    if (!order || !one_view) {
      plan.strided.insert(plan.strided.end(), group.begin(), group.end());
      continue;
    }
    const at::Tensor& m = masks[group[0]];
    const at::Tensor walked = m.reshape(t.sizes()).permute(*order);
    const uint8_t* mask = static_cast<const uint8_t*>(walked.const_data_ptr());
    if (group.size() > 1 || !walked.is_contiguous() || !walked.is_alias_of(m)) {
      const auto dtype = group.size() > 1 ? at::kBool : m.scalar_type();
      auto& o = plan.owned.emplace_back(OwnedMask{at::empty(walked.sizes(), m.options().dtype(dtype)), group, t.sizes().vec(), *order});
      mask = static_cast<const uint8_t*>(o.data.const_data_ptr());
    }
    plan.flat.push_back({t.data_ptr(), mask, t.numel(), static_cast<int64_t>(t.element_size())});
  }
  std::sort(plan.strided.begin(), plan.strided.end());
  plan.refresh(masks);
  return plan;
}

}  // namespace nptm::ops

// apply_masks_ for CUDA (apply_masks_kernel.cu) and the CPU emulator (emu/apply_masks_emu.cpp): one
// launch over the whole list. Each block zeroes the pruned entries of one (tensor, chunk) slice,
// read from a device table; 16-byte vector loads and stores where aligned. The plan (chunk table on
// the device, mask copies) is cached per (pointers, shapes, strides), so a training step that masks
// the same tensors again only refreshes mask copies (none when masks share their tensor's memory
// format) and launches.
#pragma once
#include <algorithm>
#include <limits>
#include <list>
#include <memory>
#include <mutex>

#include "../apply_masks_plan.h"
#include "../ops.h"
#include "compat.cuh"
#include "multi_tensor_apply.cuh"

namespace nptm::ops::NPTM_KERNEL_NS {

// Works on the bit pattern: +0.0 is all-zero bits in every float format.
template <typename Bits>
NPTM_DEVICE void zero_pruned(const FlatMasked& c) {
  Bits* x = static_cast<Bits*>(c.data);
  constexpr int N = 16 / sizeof(Bits);
  using DataVec = Array<Bits, N>;
  using MaskVec = Array<uint8_t, N>;
  int64_t tail = 0;
  if (reinterpret_cast<uintptr_t>(x) % sizeof(DataVec) == 0 && reinterpret_cast<uintptr_t>(c.mask) % sizeof(MaskVec) == 0) {
    const int64_t n_vec = c.numel / N;
    tail = n_vec * N;
    for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
      const MaskVec m = reinterpret_cast<const MaskVec*>(c.mask)[v];
      bool all_kept = true, all_pruned = true;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        all_kept &= m.v[j] != 0;
        all_pruned &= m.v[j] == 0;
      }
      if (all_kept) continue;  // nothing to write
      DataVec d = {};
      if (!all_pruned) {
        d = reinterpret_cast<const DataVec*>(x)[v];
#pragma unroll
        for (int j = 0; j < N; ++j) d.v[j] = m.v[j] ? d.v[j] : Bits(0);
      }
      reinterpret_cast<DataVec*>(x)[v] = d;
    }
  }
  for (int64_t j = tail + threadIdx.x; j < c.numel; j += blockDim.x)
    if (!c.mask[j]) x[j] = Bits(0);
}

NPTM_GLOBAL void apply_masks_kernel(const FlatMasked* chunks) {
  const FlatMasked c = chunks[blockIdx.x];
  switch (c.elem_size) {
    case 2: return zero_pruned<uint16_t>(c);
    case 4: return zero_pruned<uint32_t>(c);
    default: return zero_pruned<uint64_t>(c);
  }
}

// A plan with its chunk table on the device.
struct DevicePlan {
  ApplyMasksPlan plan;
  DeviceTables table;
  unsigned blocks = 0;
  bool in_graph = false;  // used inside a CUDA graph capture: the graph reads the table, never evict it
};

// (device, then per tensor: address, element size, shape, strides, and the same for its mask).
inline std::vector<int64_t> plan_key(at::TensorList tensors, at::TensorList masks) {
  std::vector<int64_t> key{tensors[0].get_device(), static_cast<int64_t>(tensors.size())};
  auto add = [&](const at::Tensor& t) {
    key.push_back(reinterpret_cast<intptr_t>(t.data_ptr()));
    key.push_back(static_cast<int64_t>(t.scalar_type()));
    key.push_back(t.dim());
    key.insert(key.end(), t.sizes().begin(), t.sizes().end());
    key.insert(key.end(), t.strides().begin(), t.strides().end());
  };
  for (size_t i = 0; i < tensors.size(); ++i) add(tensors[i]), add(masks[i]);
  return key;
}

// The most recently used plans of one backend.
class PlanCache {
 public:
  static constexpr size_t kCapacity = 16;
  std::shared_ptr<DevicePlan> find(const std::vector<int64_t>& key) {
    const std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->first == key) {
        entries_.splice(entries_.begin(), entries_, it);
        ++hits_;
        return it->second;
      }
    ++misses_;
    return nullptr;
  }
  void insert(std::vector<int64_t> key, std::shared_ptr<DevicePlan> plan) {
    const std::lock_guard lock(mutex_);
    entries_.emplace_front(std::move(key), std::move(plan));
    if (entries_.size() <= kCapacity) return;
    const auto oldest = std::find_if(entries_.rbegin(), entries_.rend(), [](const auto& e) { return !e.second->in_graph; });
    if (oldest != entries_.rend()) entries_.erase(std::next(oldest).base());
  }
  std::vector<int64_t> stats() {
    const std::lock_guard lock(mutex_);
    return {hits_, misses_, static_cast<int64_t>(entries_.size())};
  }

 private:
  std::mutex mutex_;
  std::list<std::pair<std::vector<int64_t>, std::shared_ptr<DevicePlan>>> entries_;
  int64_t hits_ = 0, misses_ = 0;
};

template <class B>
PlanCache& plan_cache() {
  static PlanCache cache;
  return cache;
}

template <class B>
std::shared_ptr<DevicePlan> build_plan(at::TensorList tensors, at::TensorList masks) {
  constexpr int64_t kChunk = 64 * B::kThreads;  // elements per block: a multiple of every vector width
  auto p = std::make_shared<DevicePlan>();
  p->plan = plan_apply_masks(tensors, masks);
  std::vector<FlatMasked> chunks;
  for (const auto& f : p->plan.flat)
    for (int64_t b = 0; b < f.numel; b += kChunk)
      chunks.push_back({static_cast<char*>(f.data) + b * f.elem_size, f.mask + b, std::min(kChunk, f.numel - b), f.elem_size});
  TORCH_CHECK(chunks.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), "apply_masks_: too many elements");
  p->blocks = static_cast<unsigned>(chunks.size());
  p->table.add(chunks);
  p->table.template upload<B>(tensors[0].device(), /*blocking=*/true);  // ready for any stream
  return p;
}

template <class B>
void apply_masks_impl(at::TensorList tensors, at::TensorList masks) {
  check_apply_masks(tensors, masks);
  if (tensors.empty()) return;
  const typename B::Guard guard(tensors[0].device());
  auto key = plan_key(tensors, masks);
  auto plan = plan_cache<B>().find(key);
  if (plan) {
    plan->plan.refresh(masks);
  } else {
    TORCH_CHECK(!B::capturing(), "apply_masks_: these tensors have no cached plan, and building one inside CUDA graph capture "
                "would copy host memory; call apply_masks_ once with the same tensors and masks before capturing");
    plan = build_plan<B>(tensors, masks);
    plan_cache<B>().insert(std::move(key), plan);
  }
  if (B::capturing()) plan->in_graph = true;
  plan->plan.apply_strided(tensors, masks);
  B::launch(&apply_masks_kernel, plan->blocks, B::kThreads, 0, plan->table.template get<const FlatMasked>(0));
}

}  // namespace nptm::ops::NPTM_KERNEL_NS

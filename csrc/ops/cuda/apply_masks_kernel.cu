// apply_masks_ on CUDA: one launch over the whole list. Each block zeroes the pruned entries of one
// (tensor, chunk) slice, read from a device table; 16-byte vector loads and stores where aligned.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "../apply_masks_plan.h"
#include "../ops.h"
#include "multi_tensor_apply.cuh"

namespace nptm::ops {
namespace {

constexpr int64_t kChunk = 1 << 14;  // elements per block: a multiple of every vector width

// Works on the bit pattern: +0.0 is all-zero bits in every float format.
template <typename Bits>
__global__ void apply_masks_kernel(const FlatMasked* chunks) {
  const FlatMasked c = chunks[blockIdx.x];
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

template <typename Bits>
void launch(const std::vector<FlatMasked>& flat, c10::Device device) {
  std::vector<FlatMasked> chunks;
  for (const auto& f : flat)
    for (int64_t b = 0; b < f.numel; b += kChunk)
      chunks.push_back({static_cast<Bits*>(f.data) + b, f.mask + b, std::min(kChunk, f.numel - b)});
  if (chunks.empty()) return;
  TORCH_CHECK(chunks.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), "apply_masks_: too many elements");
  DeviceTables table;
  const size_t off = table.add(chunks);
  table.upload(device);
  apply_masks_kernel<Bits><<<static_cast<unsigned>(chunks.size()), kBlockThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      table.get<const FlatMasked>(off));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void apply_masks_cuda(at::TensorList tensors, at::TensorList masks) {
  check_apply_masks(tensors, masks);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const auto plan = plan_apply_masks(tensors, masks);
  for (const auto i : plan.strided) apply_mask_strided(tensors[i], masks[i]);
  switch (tensors[0].element_size()) {
    case 2: return launch<uint16_t>(plan.flat, tensors[0].device());
    case 4: return launch<uint32_t>(plan.flat, tensors[0].device());
    case 8: return launch<uint64_t>(plan.flat, tensors[0].device());
    default: TORCH_CHECK(false, "apply_masks_: unexpected element size ", tensors[0].element_size());
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(nptm, CUDA, m) { m.impl("apply_masks_", TORCH_FN(apply_masks_cuda)); }
}  // namespace nptm::ops

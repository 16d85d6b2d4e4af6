// gather_channels for CUDA (gather_channels_kernel.cu) and the CPU emulator
// (emu/gather_channels_emu.cpp). One launch bounds-checks every index, one launch copies all
// contiguous tensors, viewed as [outer, C, inner]: each block copies a slice of one output in units
// of the widest power of two (up to 16 bytes) that divides the inner block and both addresses. The
// copy never reads through a bad index; the one host sync that reads the check's verdict comes after
// both launches, or not at all (synchronous_check=false: a device assert fires instead).
#pragma once
#include <algorithm>
#include <limits>

#include "../ops.h"
#include "compat.cuh"
#include "multi_tensor_apply.cuh"

namespace nptm::ops::NPTM_KERNEL_NS {

constexpr int64_t kUnitsPerThread = 16;  // units per block: 16 * blockDim (4096 on the GPU)

struct GatherTensor {
  const char* in;  // null for tensors left to the ATen fallback
  char* out;
  const void* idx;
  int64_t C, K, row_units;  // row = one inner block, row_units units of `unit` bytes
  int32_t unit, idx32;
};

struct GatherChunk {
  int64_t tensor, begin, end;  // output units [begin, end) of one tensor
};

NPTM_DEVICE int64_t channel(const GatherTensor& t, int64_t k) {
  return t.idx32 ? static_cast<const int32_t*>(t.idx)[k] : static_cast<const int64_t*>(t.idx)[k];
}

// One block per tensor: the lowest tensor number holding an out-of-range index ends in *first_bad.
NPTM_GLOBAL void check_indices_kernel(const GatherTensor* tensors, int* first_bad) {
  const GatherTensor t = tensors[blockIdx.x];
  for (int64_t k = threadIdx.x; k < t.K; k += blockDim.x) {
    const int64_t c = channel(t, k);
    if (c < 0 || c >= t.C) atomicMin(first_bad, static_cast<int>(blockIdx.x));
  }
}

template <typename Unit>
NPTM_DEVICE void copy_units(const GatherTensor& t, int64_t begin, int64_t end, bool assert_indices) {
  const Unit* in = reinterpret_cast<const Unit*>(t.in);
  Unit* out = reinterpret_cast<Unit*>(t.out);
  for (int64_t u = begin + threadIdx.x; u < end; u += blockDim.x) {
    const int64_t r = u / t.row_units, o = r / t.K;
    const int64_t c = channel(t, r - o * t.K);
    if (c < 0 || c >= t.C) {  // reported by check_indices_kernel, or here
      if (assert_indices) NPTM_DEVICE_ASSERT(c >= 0 && c < t.C);
      continue;
    }
    out[u] = in[(o * t.C + c) * t.row_units + (u - r * t.row_units)];
  }
}

NPTM_GLOBAL void gather_kernel(const GatherTensor* tensors, const GatherChunk* chunks, bool assert_indices) {
  const GatherChunk c = chunks[blockIdx.x];
  const GatherTensor t = tensors[c.tensor];
  switch (t.unit) {
    case 16: return copy_units<uint4>(t, c.begin, c.end, assert_indices);
    case 8: return copy_units<uint2>(t, c.begin, c.end, assert_indices);
    case 4: return copy_units<uint32_t>(t, c.begin, c.end, assert_indices);
    case 2: return copy_units<uint16_t>(t, c.begin, c.end, assert_indices);
    default: return copy_units<uint8_t>(t, c.begin, c.end, assert_indices);
  }
}

inline int unit_bytes(int64_t row_bytes, const void* in, const void* out) {
  int unit = 16;
  while (row_bytes % unit != 0 || reinterpret_cast<uintptr_t>(in) % unit != 0 || reinterpret_cast<uintptr_t>(out) % unit != 0) unit /= 2;
  return unit;
}

template <class B>
std::vector<at::Tensor> gather_channels_impl(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices, bool synchronous_check) {
  constexpr int64_t kUnitsPerBlock = kUnitsPerThread * B::kThreads;
  const auto d = check_gather_channels(tensors, dims, indices);
  const size_t n = tensors.size();
  if (n == 0) return {};
  TORCH_CHECK(n <= static_cast<size_t>(std::numeric_limits<int>::max()), "gather_channels: too many tensors");
  const typename B::Guard guard(tensors[0].device());
  std::vector<at::Tensor> idx(n), out(n);
  std::vector<GatherTensor> rows(n);
  std::vector<GatherChunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    const auto& t = tensors[i];
    idx[i] = indices[i].contiguous();
    rows[i] = {nullptr, nullptr, idx[i].const_data_ptr(), t.size(d[i]), idx[i].numel(), 0, 1, idx[i].scalar_type() == at::kInt};
    if (!t.is_contiguous() || t.is_conj() || t.is_neg()) continue;  // ATen fallback after the check
    auto sizes = t.sizes().vec();
    const int64_t outer = c10::multiply_integers(sizes.begin(), sizes.begin() + d[i]);
    const int64_t row_bytes = c10::multiply_integers(sizes.begin() + d[i] + 1, sizes.end()) * t.element_size();
    sizes[d[i]] = idx[i].numel();
    out[i] = at::empty(sizes, t.options());
    if (out[i].numel() == 0 || row_bytes == 0) continue;
    auto& r = rows[i];
    r.in = static_cast<const char*>(t.const_data_ptr());
    r.out = static_cast<char*>(out[i].data_ptr());
    r.unit = unit_bytes(row_bytes, r.in, r.out);
    r.row_units = row_bytes / r.unit;
    const int64_t units = outer * r.K * r.row_units;
    for (int64_t b = 0; b < units; b += kUnitsPerBlock) chunks.push_back({static_cast<int64_t>(i), b, std::min(units, b + kUnitsPerBlock)});
  }
  TORCH_CHECK(chunks.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), "gather_channels: too many elements");

  DeviceTables table;
  const size_t tensors_off = table.add(rows), chunks_off = table.add(chunks);
  const size_t flag_off = table.add(std::vector<int>{std::numeric_limits<int>::max()});
  table.template upload<B>(tensors[0].device());
  const auto* dev_rows = table.template get<const GatherTensor>(tensors_off);
  if (synchronous_check) B::launch(&check_indices_kernel, static_cast<unsigned>(n), B::kThreads, 0, dev_rows, table.template get<int>(flag_off));
  B::launch(&gather_kernel, static_cast<unsigned>(chunks.size()), B::kThreads, 0, dev_rows, table.template get<const GatherChunk>(chunks_off),
            !synchronous_check);
  if (synchronous_check) {
    const int bad = table.device_bytes().narrow(0, static_cast<int64_t>(flag_off), sizeof(int)).cpu().view(at::kInt).item<int>();
    if (bad != std::numeric_limits<int>::max()) {
      const auto host_idx = idx[bad].cpu().to(at::kLong);
      const auto C = rows[bad].C;
      const auto bad_at = at::logical_or(host_idx < 0, host_idx >= C).nonzero();
      TORCH_CHECK_INDEX(false, "gather_channels: index ", host_idx[bad_at[0][0].item<int64_t>()].item<int64_t>(), " is out of range for tensor ",
                        bad, " with size ", C, " along dim ", d[bad]);
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (!out[i].defined()) out[i] = tensors[i].index_select(d[i], indices[i]).contiguous();
  return out;
}

}  // namespace nptm::ops::NPTM_KERNEL_NS

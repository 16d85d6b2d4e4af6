// The global top-k kernels' view of their input list: every tensor is cut into chunks of
// 64 * blockDim elements, and a small device table (TensorMeta) maps chunks and flat positions of
// the concatenation to tensors.
#pragma once
#include "../float_keys.h"
#include "compat.cuh"

namespace nptm::ops::NPTM_KERNEL_NS {

constexpr int kChunkPerThread = 64;  // chunk = 64 * blockDim elements (16K on the GPU)

struct TensorMeta {
  const void* x;
  const uint8_t* mask;  // nullptr: all alive
  bool* out;
  int64_t numel;
  int64_t start;  // flat position of element 0 in the concatenation of all tensors
  int64_t first_chunk;
};

struct ChunkRange {
  TensorMeta t;
  int tensor;
  int64_t begin, end;
};

// The last tensor whose field (first_chunk or start) is <= v: empty tensors own no chunk or position.
template <int64_t TensorMeta::*Field>
NPTM_DEVICE int owner(const TensorMeta* meta, int n, int64_t v) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (meta[mid].*Field <= v) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <int64_t Chunk>
NPTM_DEVICE ChunkRange chunk_range(const TensorMeta* meta, int n, int64_t c) {
  const int i = owner<&TensorMeta::first_chunk>(meta, n, c);
  ChunkRange r{meta[i], i, (c - meta[i].first_chunk) * Chunk, 0};
  r.end = r.begin + Chunk < r.t.numel ? r.begin + Chunk : r.t.numel;
  return r;
}

template <typename T, bool MASK>
NPTM_DEVICE bool load(const TensorMeta& t, int64_t j, typename FloatBits<T>::U& bits) {
  bits = static_cast<const typename FloatBits<T>::U*>(t.x)[j];
  return !MASK || t.mask[j];
}

}  // namespace nptm::ops::NPTM_KERNEL_NS

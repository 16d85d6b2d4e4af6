// The sample select of global_magnitude_masks on CUDA (the design of cpu/topk_sample.h):
//  1. sample_kernel reads the CPU's S = min(N, 2^17) jittered positions; the sorted alive sample
//     keys give bounds lo <= hi bracketing the k-th smallest alive key with high probability.
//  2. fused_kernel, one block per chunk: final masks of the keys outside [lo, hi], a provisional
//     "keep" for those inside, counts of alive keys, keys < lo and alive NaNs, and the alive keys
//     inside appended with their flat positions to a candidate buffer (one atomicAdd per tile).
//  3. If the buffer did not overflow and the k-th key is a candidate: sort the candidates by
//     (key, position) and prune the first k - below of them (scatter_prune_kernel). Else: a miss.
// Keys travel as "sortable" int64s (signed order = key order), so torch's sort orders them.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "../topk_sample_plan.h"
#include "topk_chunks.cuh"

namespace nptm::ops::NPTM_KERNEL_NS {

constexpr int64_t kCandidateSlack = 1024;  // candidate room beyond twice the expected count

// Which select the last global_magnitude_masks call on this thread ran: "sample", "miss" or "overflow"
// (the sample select fell back to radix), or "radix" (too small or nothing to prune). Tests read it.
inline thread_local const char* last_select_path = "";

template <typename U> NPTM_HD int64_t sortable(U key) {
  return sizeof(U) == 8 ? int64_t(uint64_t(key) ^ kSignBit<uint64_t>) : int64_t(key);
}

// keys[i] = sortable key at sample position i (float_keys.h: sample_position; every position when S == N),
// alive[i] = its mask.
template <typename T, bool ABS, bool MASK>
NPTM_GLOBAL void sample_kernel(const TensorMeta* meta, int n, int64_t N, int64_t S, int64_t* keys, bool* alive) {
  using U = typename FloatBits<T>::U;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < S; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = S == N ? i : sample_position(i, N, kSampleBits);
    const TensorMeta& t = meta[owner<&TensorMeta::start>(meta, n, p)];
    U bits;
    alive[i] = load<T, MASK>(t, p - t.start, bits);
    keys[i] = sortable(score_key<U, ABS>(bits));
  }
}

// tally: [candidates, alive keys < lo, alive keys, NaN slot (max over alive NaNs of n - tensor)].
// Candidates go to cand[0][...] (keys) and cand[1][...] (positions) while the reservation fits in cap.
// A tile is kItems coalesced loads per thread: one scan and at most one atomicAdd per tile.
template <typename T, bool ABS, bool MASK, int Threads>
NPTM_GLOBAL void fused_kernel(const TensorMeta* meta, int n, int64_t lo, int64_t hi, int64_t* cand, int64_t cap, unsigned long long* tally) {
  using U = typename FloatBits<T>::U;
  using Scan = BlockScan<int, Threads>;
  using Reduce = BlockReduce<unsigned long long, Threads>;
  constexpr int kItems = 8;
  static_assert(kChunkPerThread % kItems == 0, "tiles cover a chunk exactly");
  NPTM_SHARED typename Scan::TempStorage scan_tmp;
  NPTM_SHARED typename Reduce::TempStorage reduce_tmp;
  NPTM_SHARED unsigned long long tile_base;
  const ChunkRange r = chunk_range<kChunkPerThread * Threads>(meta, n, blockIdx.x);
  unsigned long long below = 0, alive = 0;
  bool nan = false;
  for (int64_t base = r.begin + threadIdx.x; base < r.end + threadIdx.x; base += kItems * Threads) {  // same trip count for the whole block
    int64_t keys[kItems];
    int mid = 0;  // bit i: item i is a candidate
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = base + i * Threads;
      U bits = 0;
      const bool a = j < r.end && load<T, MASK>(r.t, j, bits);
      keys[i] = sortable(score_key<U, ABS>(bits));
      mid |= int(a && keys[i] >= lo && keys[i] <= hi) << i;
      below += a && keys[i] < lo;
      alive += a;
      nan |= a && is_nan_bits<T>(bits);
      if (j < r.end) r.t.out[j] = a && keys[i] >= lo;
    }
    int nmid = 0, before, count;
    for (int i = 0; i < kItems; ++i) nmid += mid >> i & 1;
    Scan(scan_tmp).ExclusiveSum(nmid, before, count);
    if (count > 0) {  // block-uniform
      if (threadIdx.x == 0) tile_base = atomicAdd(&tally[0], static_cast<unsigned long long>(count));
      __syncthreads();  // tile_base is set; every thread has read scan_tmp
      if (tile_base + count <= static_cast<unsigned long long>(cap))
        for (int i = 0; i < kItems; ++i)
          if (mid >> i & 1) {
            const unsigned long long at = tile_base + before++;
            cand[at] = keys[i];
            cand[cap + at] = r.t.start + base + i * Threads;
          }
    }
    __syncthreads();  // scan_tmp and tile_base are reused by the next tile
  }
  if (nan) atomicMax(&tally[3], static_cast<unsigned long long>(n - r.tensor));
  const unsigned long long sums = Reduce(reduce_tmp).Sum(below << 32 | alive);  // a chunk holds < 2^32 keys
  if (threadIdx.x == 0) {
    atomicAdd(&tally[1], sums >> 32);
    atomicAdd(&tally[2], sums & 0xffffffffull);
  }
}

// out = false at the flat positions pos[0, count).
NPTM_GLOBAL void scatter_prune_kernel(const TensorMeta* meta, int n, const int64_t* pos, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const TensorMeta& t = meta[owner<&TensorMeta::start>(meta, n, pos[i])];
    t.out[pos[i] - t.start] = false;
  }
}

// The positions of the first `want` candidates in (key, position) order: one sort of key << b | pos
// where that fits in 63 bits, else a sort by position then a stable sort by key.
inline at::Tensor first_in_order(const at::Tensor& keys, const at::Tensor& pos, int64_t want, int key_bits, int64_t total) {
  int pos_bits = 1;
  while ((int64_t(1) << pos_bits) < total) ++pos_bits;
  if (key_bits + pos_bits <= 63) {  // narrow keys are >= 0
    const auto packed = std::get<0>(at::sort(keys.bitwise_left_shift(pos_bits).bitwise_or_(pos)));
    return packed.narrow(0, 0, want).bitwise_and((int64_t(1) << pos_bits) - 1);
  }
  const auto [by_pos, perm] = at::sort(pos);
  const auto order = std::get<1>(at::sort(keys.index_select(0, perm), /*stable=*/std::optional<bool>(true), 0));
  return by_pos.index_select(0, order.narrow(0, 0, want));
}

template <class B, typename T, bool ABS, bool MASK>
struct SampleSelectLauncher {
  static constexpr int kThreads = B::kThreads;
  const TensorMeta* meta;
  int n;
  int64_t nchunks, total;
  c10::Device device;

  int grid_for(int64_t work) const { return int(std::min<int64_t>((work + kThreads - 1) / kThreads, int64_t(B::multiprocessors()) * 8)); }

  struct Bounds {
    int64_t lo, hi, cap;  // sortable keys; candidate buffer capacity
  };

  // Ranks r +- delta of the alive sample keys (the CPU formula), or {} when no sample key is alive.
  std::optional<Bounds> bounds(PruneCount count) const {
    const int64_t S = std::min(total, kSampleSize);
    const auto opts = at::TensorOptions().device(device);
    auto keys = at::empty({S}, opts.dtype(at::kLong));
    auto alive = at::empty({S}, opts.dtype(at::kBool));
    B::launch(&sample_kernel<T, ABS, MASK>, grid_for(S), kThreads, 0, meta, n, total, S, keys.data_ptr<int64_t>(), alive.data_ptr<bool>());
    const auto sorted = std::get<0>(at::sort(keys.masked_select(alive)));
    const int64_t A = sorted.numel();
    if (A == 0) return {};
    const auto [ilo, ihi, expected] = sample_ranks(count, total, S, A);
    const auto at_ranks = at::stack({sorted[std::clamp<int64_t>(ilo, 0, A - 1)], sorted[std::min(ihi, A - 1)]}).cpu();
    const int64_t* v = at_ranks.data_ptr<int64_t>();
    return Bounds{ilo >= 0 ? v[0] : std::numeric_limits<int64_t>::min(), ihi < A ? v[1] : std::numeric_limits<int64_t>::max(),
                  int64_t(2 * expected) + kCandidateSlack};
  }

  // False on a miss (the caller runs the radix select). Throws like it on NaN and k > alive.
  bool run(PruneCount count) const {
    const auto b = bounds(count);
    if (!b) return last_select_path = "miss", false;
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
    const at::Tensor cand = at::empty({2, b->cap}, long_opts);
    const at::Tensor tally = at::zeros({4}, long_opts);
    B::launch(&fused_kernel<T, ABS, MASK, kThreads>, unsigned(nchunks), kThreads, 0, meta, n, b->lo, b->hi, cand.data_ptr<int64_t>(), b->cap,
              reinterpret_cast<unsigned long long*>(tally.data_ptr<int64_t>()));
    const auto host = tally.cpu();  // synchronizes the stream
    const int64_t* h = host.data_ptr<int64_t>();
    const int64_t ncand = h[0], below = h[1], alive = h[2], nan = h[3];
    TORCH_CHECK_VALUE(nan == 0, "global_magnitude_masks: NaN score in tensor ", n - nan);
    const int64_t k = count.of(alive);
    TORCH_CHECK_VALUE(k <= alive, "global_magnitude_masks: k=", k, " but only ", alive, " entries are alive");
    if (ncand > b->cap) return last_select_path = "overflow", false;
    if (!(below < k && k <= below + ncand)) return last_select_path = "miss", false;
    const at::Tensor pos = first_in_order(cand[0].narrow(0, 0, ncand), cand[1].narrow(0, 0, ncand), k - below, kKeyBits<typename FloatBits<T>::U>, total);
    B::launch(&scatter_prune_kernel, grid_for(pos.numel()), kThreads, 0, meta, n, pos.const_data_ptr<int64_t>(), pos.numel());
    return true;
  }
};

}  // namespace nptm::ops::NPTM_KERNEL_NS

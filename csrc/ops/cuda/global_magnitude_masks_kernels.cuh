// Global top-k magnitude selection for CUDA (global_magnitude_masks_kernel.cu) and the CPU emulator
// (emu/global_magnitude_masks_emu.cpp), the CPU kernel's design with one launch per pass over all
// tensors (chunks of 64 * blockDim elements, topk_chunks.cuh). Inputs of >= 2^14 entries first try the
// sample select (topk_sample_kernels.cuh): sample bounds, one fused pass that writes the final masks
// outside the bounds and collects the candidates inside, a sort of the candidates. On a miss (the
// k-th key outside the bounds, or too many candidates) the exact radix select below runs instead and
// rewrites every output. Radix: 11-bit digits (fp16/bf16: <= 2 passes, fp32: <= 3, fp64: <= 6)
// counted in shared memory and flushed with global atomics; the host reads each histogram back to
// pick the digit. Ties at the threshold: per-chunk counts of equal keys, at::cumsum, and an ordered
// in-block scan (BlockScan) in the write pass. A list of mixed float dtypes is widened to the widest.
#pragma once
#include <ATen/Dispatch.h>

#include <algorithm>
#include <type_traits>

#include "../float_keys.h"
#include "../ops.h"
#include "compat.cuh"
#include "multi_tensor_apply.cuh"
#include "topk_sample_kernels.cuh"

namespace nptm::ops::NPTM_KERNEL_NS {

constexpr int kDigitBits = 11;

// hist[d] += #alive keys with key_prefix(key, shift + width) == prefix and digit d at `shift`.
// nan_slot (first pass): max over alive NaNs of n - tensor index.
template <typename T, bool ABS, bool MASK, int Threads>
NPTM_GLOBAL void histogram_kernel(const TensorMeta* meta, int n, int64_t nchunks, int shift, int width, uint64_t prefix,
                                  unsigned long long* hist, unsigned long long* nan_slot) {
  using U = typename FloatBits<T>::U;
  NPTM_DYNAMIC_SHARED(unsigned int, counts);
  const int bins = 1 << width;
  for (int b = threadIdx.x; b < bins; b += blockDim.x) counts[b] = 0;
  __syncthreads();
  for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const ChunkRange r = chunk_range<kChunkPerThread * Threads>(meta, n, c);
    bool nan = false;
    for (int64_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) {
      U bits;
      if (!load<T, MASK>(r.t, j, bits)) continue;
      nan |= is_nan_bits<T>(bits);
      const U key = score_key<U, ABS>(bits);
      if (key_prefix(key, shift + width) == prefix) atomicAdd(&counts[(key >> shift) & (bins - 1)], 1u);
    }
    if (nan && nan_slot != nullptr) atomicMax(nan_slot, static_cast<unsigned long long>(n - r.tensor));
  }
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += blockDim.x)
    if (counts[b] != 0) atomicAdd(&hist[b], static_cast<unsigned long long>(counts[b]));
}

// counts[c] = #alive keys in chunk c with key >> shift == prefix. One block per chunk.
template <typename T, bool ABS, bool MASK, int Threads>
NPTM_GLOBAL void count_equal_kernel(const TensorMeta* meta, int n, int shift, uint64_t prefix, int64_t* counts) {
  using U = typename FloatBits<T>::U;
  using Reduce = BlockReduce<int, Threads>;
  NPTM_SHARED typename Reduce::TempStorage tmp;
  const ChunkRange r = chunk_range<kChunkPerThread * Threads>(meta, n, blockIdx.x);
  int count = 0;
  for (int64_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) {
    U bits;
    const bool alive = load<T, MASK>(r.t, j, bits);
    count += alive && uint64_t(score_key<U, ABS>(bits) >> shift) == prefix;
  }
  const int total = Reduce(tmp).Sum(count);
  if (threadIdx.x == 0) counts[blockIdx.x] = total;
}

// Output masks by rule R. One block per chunk; prune_ties ranks equal keys in index order, starting
// from first_rank[chunk], and prunes ranks < r.
template <typename T, bool ABS, bool MASK, int Threads, Rule R>
NPTM_GLOBAL void write_kernel(const TensorMeta* meta, int n, int shift, uint64_t prefix, const int64_t* first_rank, int64_t r) {
  using U = typename FloatBits<T>::U;
  using Scan = BlockScan<int, Threads>;
  NPTM_SHARED typename Scan::TempStorage tmp;
  const ChunkRange range = chunk_range<kChunkPerThread * Threads>(meta, n, blockIdx.x);
  int64_t rank = R == Rule::prune_ties ? first_rank[blockIdx.x] : 0;
  for (int64_t base = range.begin; base < range.end; base += Threads) {  // same trip count for the whole block
    const int64_t j = base + threadIdx.x;
    const bool inside = j < range.end;
    U bits = 0;
    const bool alive = inside && load<T, MASK>(range.t, j, bits);
    const uint64_t p = uint64_t(score_key<U, ABS>(bits) >> shift);
    bool keep;
    if constexpr (R == Rule::keep_alive) {
      keep = alive;
    } else if constexpr (R == Rule::prune_all) {
      keep = false;
    } else if constexpr (R == Rule::prune_le) {
      keep = alive && p > prefix;
    } else {
      const int eq = alive && p == prefix;
      int before, tile_total;
      Scan(tmp).ExclusiveSum(eq, before, tile_total);
      __syncthreads();  // tmp is reused by the next tile
      keep = alive && (p > prefix || (eq && rank + before >= r));
      rank += tile_total;
    }
    if (inside) range.t.out[j] = keep;
  }
}

template <class B, typename T, bool ABS, bool MASK>
struct RadixSelectLauncher {
  static constexpr int kThreads = B::kThreads;
  const TensorMeta* meta;
  int n;
  int64_t nchunks;
  c10::Device device;

  void histogram(int shift, int width, uint64_t prefix, unsigned long long* hist, unsigned long long* nan_slot) const {
    const int blocks = int(std::min<int64_t>(nchunks, int64_t(B::multiprocessors()) * 8));
    B::launch(&histogram_kernel<T, ABS, MASK, kThreads>, blocks, kThreads, sizeof(unsigned int) << width, meta, n, nchunks, shift, width,
              prefix, hist, nan_slot);
  }
  void count_equal(int shift, uint64_t prefix, int64_t* counts) const {
    B::launch(&count_equal_kernel<T, ABS, MASK, kThreads>, unsigned(nchunks), kThreads, 0, meta, n, shift, prefix, counts);
  }
  template <Rule R>
  void write(int shift, uint64_t prefix, const int64_t* first_rank, int64_t r) const {
    B::launch(&write_kernel<T, ABS, MASK, kThreads, R>, unsigned(nchunks), kThreads, 0, meta, n, shift, prefix, first_rank, r);
  }

  void run(PruneCount count) const {
    using U = typename FloatBits<T>::U;
    int64_t k = count.of(0);
    if (nchunks == 0) {  // only empty tensors
      TORCH_CHECK_VALUE(k == 0, "global_magnitude_masks: k=", k, " but only 0 entries are alive");
      return;
    }
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
    // [histogram bins..., NaN slot]
    auto buf = at::empty({(int64_t(1) << kDigitBits) + 1}, long_opts);
    auto* hist = reinterpret_cast<unsigned long long*>(buf.data_ptr<int64_t>());
    RadixSelect sel(kKeyBits<U>, kDigitBits, k);
    int64_t alive = 0;
    bool first = true;
    while (first || (k > 0 && k < alive && !sel.done())) {
      buf.zero_();
      histogram(sel.digit_shift(), sel.width(), sel.prefix, hist, first ? hist + (1 << kDigitBits) : nullptr);
      const auto host = buf.cpu();  // synchronizes the stream
      const int64_t* h = host.data_ptr<int64_t>();
      if (first) {
        const int64_t nan = h[1 << kDigitBits];
        TORCH_CHECK_VALUE(nan == 0, "global_magnitude_masks: NaN score in tensor ", n - nan);
        for (int64_t b = 0; b < (int64_t(1) << sel.width()); ++b) alive += h[b];
        k = sel.want = count.of(alive);
        TORCH_CHECK_VALUE(k <= alive, "global_magnitude_masks: k=", k, " but only ", alive, " entries are alive");
        first = false;
        if (k == 0 || k == alive) break;
      }
      sel.consume(h);
    }
    if (k == 0) return write<Rule::keep_alive>(0, 0, nullptr, 0);
    if (k == alive) return write<Rule::prune_all>(0, 0, nullptr, 0);
    if (sel.want == sel.count_eq) return write<Rule::prune_le>(sel.shift, sel.prefix, nullptr, 0);
    auto counts = at::empty({nchunks}, long_opts);
    count_equal(sel.shift, sel.prefix, counts.data_ptr<int64_t>());
    const auto first_rank = (at::cumsum(counts, 0) - counts).contiguous();
    write<Rule::prune_ties>(sel.shift, sel.prefix, first_rank.data_ptr<int64_t>(), sel.want);
  }
};

template <typename F>
void dispatch_bool(bool b, F&& f) {
  if (b) f(std::true_type{});
  else f(std::false_type{});
}

// The widest dtype of the list: keys of one format order every score (widening is exact).
inline at::ScalarType common_float_dtype(at::TensorList scores) {
  at::ScalarType d = scores[0].scalar_type();
  for (const auto& s : scores)
    if (s.scalar_type() != d) d = (d == at::kDouble || s.scalar_type() == at::kDouble) ? at::kDouble : at::kFloat;
  return d;
}

template <class B>
std::vector<at::Tensor> global_magnitude_masks_impl(at::TensorList scores, at::TensorList masks, int64_t k, bool use_abs,
                                                   std::optional<double> fraction) {
  constexpr int64_t kChunk = int64_t(kChunkPerThread) * B::kThreads;
  const PruneCount count = check_global_magnitude_masks(scores, masks, k, fraction, /*mixed_dtypes=*/true);
  std::vector<at::Tensor> outs;
  if (scores.empty()) return outs;
  const typename B::Guard guard(scores[0].device());
  const int n = int(scores.size());
  const auto dtype = common_float_dtype(scores);
  std::vector<TensorMeta> meta(n);
  std::vector<at::Tensor> converted;  // the rare non-contiguous or narrower inputs, kept alive until done
  int64_t nchunks = 0, total = 0;
  for (int i = 0; i < n; ++i) {
    const bool as_is = scores[i].is_contiguous() && scores[i].scalar_type() == dtype;
    const at::Tensor s = as_is ? scores[i] : converted.emplace_back(scores[i].to(dtype).contiguous());
    const uint8_t* mask = nullptr;
    if (!masks.empty()) {
      const at::Tensor m = masks[i].is_contiguous() ? masks[i] : converted.emplace_back(masks[i].contiguous());
      mask = static_cast<const uint8_t*>(m.const_data_ptr());
    }
    outs.push_back(at::empty(s.sizes(), s.options().dtype(at::kBool)));
    meta[i] = TensorMeta{s.const_data_ptr(), mask, outs.back().data_ptr<bool>(), s.numel(), total, nchunks};
    nchunks += (s.numel() + kChunk - 1) / kChunk;
    total += s.numel();
  }
  DeviceTables table;
  table.add(meta);
  table.template upload<B>(scores[0].device());
  const auto* dev_meta = table.template get<const TensorMeta>(0);
  const bool sampled = sample_select_applies(count, total);
  last_select_path = sampled ? "sample" : "radix";
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "global_magnitude_masks", [&] {
    dispatch_bool(use_abs, [&](auto abs) {
      dispatch_bool(!masks.empty(), [&](auto has_mask) {
        constexpr bool ABS = decltype(abs)::value, MASK = decltype(has_mask)::value;
        if (sampled && SampleSelectLauncher<B, scalar_t, ABS, MASK>{dev_meta, n, nchunks, total, scores[0].device()}.run(count)) return;
        RadixSelectLauncher<B, scalar_t, ABS, MASK>{dev_meta, n, nchunks, scores[0].device()}.run(count);
      });
    });
  });
  return outs;
}

}  // namespace nptm::ops::NPTM_KERNEL_NS

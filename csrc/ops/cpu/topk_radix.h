// Exact fallback of the CPU global top-k: OpenMP radix select over all tensors in place (no
// concatenation, no float copies). Passes over the scores: one histogram per key digit (16-bit
// digits: 1 pass for fp16/bf16, <= 2 for fp32, <= 4 for fp64; later passes only count keys sharing
// the resolved prefix, the first also checks NaN and counts the alive), then one fused pass writing
// the masks. Ties at the threshold cost one extra counting pass, only when some but not all of them
// are pruned (it finds the position of the last pruned tie, so the write pass needs no ranks).
#pragma once
#include <omp.h>

#include <climits>
#include <utility>
#include <vector>

#include "topk_inputs.h"

namespace nptm::ops::topk_cpu {

// Calls f(source, mask) for the chunk's tensor: source.key(j), source.bits(j) in the key dtype K.
template <typename K, bool ABS, bool MASK, typename F> void visit_chunk(const Inputs& in, const Chunk& ch, F&& f) {
  const uint8_t* m = MASK ? in.mask[ch.tensor] : nullptr;
  visit_source<K>(in.dtype[ch.tensor], [&](auto tag) { f(Source<K, typename decltype(tag)::type, ABS>(in.x[ch.tensor]), m); });
}

// First tensor with an alive NaN (INT_MAX if none), and the number of alive entries.
template <typename K, bool ABS, bool MASK> struct Radix {
  using U = typename FloatBits<K>::U;
  const Inputs& in;

  template <typename F> void chunk(const Chunk& ch, F&& f) const { visit_chunk<K, ABS, MASK>(in, ch, f); }

  // hist[d] = #alive keys with key_prefix(key, shift + width) == prefix and digit d at `shift`.
  // Returns the first tensor with an alive NaN (INT_MAX if none) when check_nan.
  int histogram(int shift, int width, uint64_t prefix, bool check_nan, int64_t* hist, std::vector<int64_t>& local) const {
    const int64_t bins = int64_t(1) << width;
    local.resize(size_t(in.threads * bins));
    int nan_tensor = INT_MAX;
    const int64_t nchunks = int64_t(in.chunks.size());
#pragma omp parallel num_threads(in.threads)
    {
      int64_t* h = local.data() + omp_get_thread_num() * bins;
      std::fill(h, h + bins, 0);
      int my_nan = INT_MAX;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const Chunk ch = in.chunks[c];
        bool nan = false;
        chunk(ch, [&](const auto& src, const uint8_t* m) {
          for (int64_t j = ch.begin; j < ch.end; ++j) {
            const bool alive = !MASK || m[j];
            const U bits = src.bits(j);
            nan |= alive & is_nan_bits<K>(bits);
            const U key = score_key<U, ABS>(bits);
            if (alive && key_prefix(key, shift + width) == prefix) ++h[(key >> shift) & (bins - 1)];
          }
        });
        if (check_nan && nan) my_nan = std::min(my_nan, ch.tensor);
      }
      const int team = omp_get_num_threads();
#pragma omp for schedule(static)
      for (int64_t b = 0; b < bins; ++b) {
        int64_t sum = 0;
        for (int t = 0; t < team; ++t) sum += local[t * bins + b];
        hist[b] = sum;
      }
#pragma omp critical
      nan_tensor = std::min(nan_tensor, my_nan);
    }
    return nan_tensor;
  }

  // #alive keys in [begin, end) of the chunk with key >> shift == prefix.
  int64_t count_equal(const Chunk& ch, int64_t begin, int64_t end, int shift, uint64_t prefix) const {
    int64_t n = 0;
    chunk(ch, [&](const auto& src, const uint8_t* m) {
      for (int64_t j = begin; j < end; ++j) n += (!MASK || m[j]) && uint64_t(src.key(j) >> shift) == prefix;
    });
    return n;
  }

  // Position (chunk, index) of the r-th alive key (1-based, position order) with key >> shift == prefix.
  std::pair<int64_t, int64_t> find_rth_equal(int shift, uint64_t prefix, int64_t r) const {
    const int64_t nchunks = int64_t(in.chunks.size());
    std::vector<int64_t> counts(nchunks);
#pragma omp parallel for num_threads(in.threads) schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) counts[c] = count_equal(in.chunks[c], in.chunks[c].begin, in.chunks[c].end, shift, prefix);
    int64_t c = 0;
    for (; r > counts[c]; ++c) r -= counts[c];
    const Chunk ch = in.chunks[c];
    int64_t j = ch.begin;
    for (; (r -= count_equal(ch, j, j + 1, shift, prefix)) > 0; ++j) {}
    return {c, j};
  }

  // Output masks by rule R. prune_le: prune key >> shift < prefix, and == prefix only up to
  // position (cut_chunk, cut_index) inclusive (cut_chunk == #chunks: all of them).
  template <Rule R> void write(int shift, uint64_t prefix, int64_t cut_chunk, int64_t cut_index) const {
    const int64_t nchunks = int64_t(in.chunks.size());
#pragma omp parallel for num_threads(in.threads) schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const Chunk ch = in.chunks[c];
      bool* out = in.out[ch.tensor];
      chunk(ch, [&](const auto& src, const uint8_t* m) {
        if constexpr (R == Rule::keep_alive) {
          for (int64_t j = ch.begin; j < ch.end; ++j) out[j] = !MASK || m[j];
        } else if constexpr (R == Rule::prune_all) {
          std::fill(out + ch.begin, out + ch.end, false);
        } else {
          const int64_t cut = c < cut_chunk ? ch.end : c > cut_chunk ? ch.begin : cut_index + 1;
          for (int64_t j = ch.begin; j < cut; ++j) out[j] = (!MASK || m[j]) && uint64_t(src.key(j) >> shift) > prefix;
          for (int64_t j = cut; j < ch.end; ++j) out[j] = (!MASK || m[j]) && uint64_t(src.key(j) >> shift) >= prefix;
        }
      });
    }
  }

  void run(PruneCount count) const {
    int64_t k = count.of(0);
    const int digit_bits = in.total() < (int64_t(1) << 14) ? 8 : 16;  // small inputs: small histograms
    RadixSelect sel(kKeyBits<U>, digit_bits, k);
    std::vector<int64_t> hist(size_t(1) << digit_bits), local;
    int64_t alive = 0;
    bool first = true;
    while (first || (k > 0 && k < alive && !sel.done())) {
      const int nan_tensor = histogram(sel.digit_shift(), sel.width(), sel.prefix, first, hist.data(), local);
      if (first) {
        TORCH_CHECK_VALUE(nan_tensor == INT_MAX, "global_magnitude_masks: NaN score in tensor ", nan_tensor);
        for (int64_t b = 0; b < (int64_t(1) << sel.width()); ++b) alive += hist[b];
        k = sel.want = count.of(alive);
        TORCH_CHECK_VALUE(k <= alive, "global_magnitude_masks: k=", k, " but only ", alive, " entries are alive");
        first = false;
        if (k == 0 || k == alive) break;
      }
      sel.consume(hist.data());
    }
    if (k == 0) return write<Rule::keep_alive>(0, 0, 0, 0);
    if (k == alive) return write<Rule::prune_all>(0, 0, 0, 0);
    if (sel.want == sel.count_eq) return write<Rule::prune_le>(sel.shift, sel.prefix, int64_t(in.chunks.size()), 0);
    // Ties at the threshold: only the first `want` equal keys in position order are pruned.
    const auto [cut_chunk, cut_index] = find_rth_equal(sel.shift, sel.prefix, sel.want);
    write<Rule::prune_le>(sel.shift, sel.prefix, cut_chunk, cut_index);
  }
};

}  // namespace nptm::ops::topk_cpu

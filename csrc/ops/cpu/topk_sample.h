// Sample-based global top-k on CPU (the fast path; Radix is the exact fallback):
//  1. Read a jittered strided sample of S positions; the alive keys among them give bounds lo <= hi
//     bracketing the k-th smallest alive key with high probability (rank k*S/N +- z standard deviations).
//  2. ONE fused pass over every tensor: count alive keys < lo, write the final mask of every key
//     outside [lo, hi] (and a provisional "keep" for those inside), and collect the alive keys inside
//     [lo, hi] with their positions into per-thread candidate buffers (O(candidates) memory).
//  3. If the k-th key lies in [lo, hi] and no buffer overflowed: select among the candidates exactly
//     (a bucket select on their keys, ties pruned in position order) and prune them. Else report a miss.
#pragma once
#include <omp.h>

#include <bit>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../topk_sample_plan.h"
#include "topk_bucket_select.h"
#include "topk_fused_avx2.h"
#include "topk_radix.h"

namespace nptm::ops::topk_cpu {

constexpr int64_t kBlock = 64;  // elements per vectorized block of the fused pass

static_assert(std::endian::native == std::endian::little, "the candidate scan reads flag bytes as little-endian words");

template <typename K, bool ABS, bool MASK> struct SampleSelect {
  using U = typename FloatBits<K>::U;
  const Inputs& in;

  struct Segment {  // one chunk's candidates: buffer[thread][begin, begin + count)
    int thread;
    int64_t begin, count;
  };

  void prefetch(int t, int64_t j) const {
    __builtin_prefetch(static_cast<const char*>(in.x[t]) + j * int64_t(c10::elementSize(in.dtype[t])));
    if constexpr (MASK) __builtin_prefetch(in.mask[t] + j);
  }

  // Alive sample keys at sample_position(i) for i < S (every position when S == N).
  std::vector<U> sample(int64_t S) const {
    const int64_t N = in.total();
    constexpr int64_t kBatch = 1024;
    std::vector<U> keys(S);
    std::vector<uint8_t> ok(S);
#pragma omp parallel for num_threads(in.threads) schedule(static)
    for (int64_t b = 0; b < S; b += kBatch) {
      auto at = [&](int64_t i) { return S == N ? i : sample_position(i, N, kSampleBits); };
      int t = int(std::upper_bound(in.start.begin(), in.start.end(), at(b)) - in.start.begin()) - 1;
      constexpr int64_t kAhead = 16;  // prefetch distance: the reads are independent cache misses
      int pt = t;
      for (int64_t i = b; i < std::min(b + kAhead, S); ++i) {
        const int64_t p = at(i);
        while (p >= in.start[pt + 1]) ++pt;
        prefetch(pt, p - in.start[pt]);
      }
      for (int64_t i = b; i < std::min(b + kBatch, S); ++i) {
        if (i + kAhead < S) {
          const int64_t p = at(i + kAhead);
          while (p >= in.start[pt + 1]) ++pt;
          prefetch(pt, p - in.start[pt]);
        }
        const int64_t p = at(i);
        while (p >= in.start[t + 1]) ++t;
        const int64_t j = p - in.start[t];
        ok[i] = !MASK || in.mask[t][j];
        visit_chunk<K, ABS, MASK>(in, Chunk{t, 0, 0}, [&](const auto& src, const uint8_t*) { keys[i] = src.key(j); });
      }
    }
    int64_t n = 0;
    for (int64_t i = 0; i < S; ++i)
      if (ok[i]) keys[n++] = keys[i];
    keys.resize(n);
    return keys;
  }

  // The fused pass over x[begin, end) (source dtype T): final masks outside [lo, lo + span], alive
  // candidates inside appended at buf[tally.n...] (offsets from `base`) while they fit in cap.
  // Raw restrict pointers and local counters: the bool stores alias nothing, so blocks vectorize
  // (an AVX2 clone where the CPU has it).
  template <typename T>
  __attribute__((target_clones("avx2", "default"))) static void fused(const void* xp, const uint8_t* __restrict m, bool* __restrict out, int64_t base, int64_t begin, int64_t end,
                    U lo, U span, Candidate<U>* __restrict buf, int64_t cap, Tally& tally) {
    const auto* __restrict x = static_cast<const typename FloatBits<T>::U*>(xp);
    int64_t n = tally.n, below = 0, alive = 0;
    uint32_t nan = 0;
    bool overflow = tally.overflow;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t e = std::min(b + kBlock, end);
      uint32_t nbelow = 0, nmid = 0, nalive = 0;
      for (int64_t j = b; j < e; ++j) {
        const U bits = to_key_bits<K, T>(x[j]);
        const U key = score_key<U, ABS>(bits);
        const bool a = !MASK || m[j];
        out[j] = a & (key >= lo);
        nbelow += a & (key < lo);
        nmid += a & (U(key - lo) <= span);
        nan |= a & is_nan_bits<K>(bits);
        if constexpr (MASK) nalive += a;
      }
      below += nbelow;
      alive += MASK ? int64_t(nalive) : e - b;
      if (nmid == 0 || overflow) continue;
      if (n + nmid > cap) {
        overflow = true;
        continue;
      }
      alignas(64) uint8_t flag[kBlock + 8];  // this block's candidates, found by 8-byte words
      for (int64_t j = b; j < e; ++j) flag[j - b] = (!MASK || m[j]) & (U(score_key<U, ABS>(to_key_bits<K, T>(x[j])) - lo) <= span);
      std::memset(flag + (e - b), 0, 8);
      for (int64_t w = 0; w < e - b; w += 8) {
        uint64_t v;
        std::memcpy(&v, flag + w, 8);
        for (; v; v &= v - 1) {
          const int64_t j = b + w + (__builtin_ctzll(v) >> 3);
          buf[n++] = {score_key<U, ABS>(to_key_bits<K, T>(x[j])), uint32_t(j - base)};
        }
      }
    }
    tally.n = n;
    tally.below += below;
    tally.alive += alive;
    tally.overflow = overflow;
    tally.nan |= nan != 0;
  }

  // Returns false when the bounds miss (the caller falls back to Radix). Throws like Radix on
  // NaN and k > alive. Requires sample_select_applies(count, N).
  bool run(PruneCount count) const {
    const int64_t N = in.total(), S = std::min(N, kSampleSize);
    std::vector<U> keys = sample(S);
    const int64_t A = int64_t(keys.size());
    if (A == 0) return false;
    const auto [ilo, ihi, expected] = sample_ranks(count, N, S, A);
    U lo = 0, hi = U(~U(0));
    BucketSelect<U> sample_ranks(0, U(~U(0)));
    for (const U key : keys) sample_ranks.add(key);
    auto each_key = [&](auto&& take) {
      for (const U key : keys) take(key);
    };
    if (ilo >= 0 && ilo < A) lo = sample_ranks.select(ilo, each_key).first;
    else if (ilo >= A) lo = *std::max_element(keys.begin(), keys.end());  // A < S: many dead entries
    if (ihi < A) hi = sample_ranks.select(ihi, each_key).first;
    const U span = U(hi - lo);
    const int64_t cap = int64_t(2 * expected) + 4 * kBlock;  // k > alive may put both bounds past the sample

    // 2. The fused pass.
    const int T = in.threads;
    std::vector<std::unique_ptr<Candidate<U>[]>> bufs(T);
    for (auto& b : bufs) b.reset(new Candidate<U>[cap + 1]);  // allocated here: nothing throws inside the parallel region
    std::vector<Tally> tallies(T);
    std::vector<int> nan_tensor(T, INT_MAX);
    const int64_t nchunks = int64_t(in.chunks.size());
    std::vector<Segment> segs(nchunks);
#pragma omp parallel num_threads(T)
    {
      const int t = omp_get_thread_num();
      Candidate<U>* buf = bufs[t].get();
      Tally tally;  // on this thread's stack: no false sharing
      int my_nan = INT_MAX;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const Chunk ch = in.chunks[c];
        const int64_t begin = tally.n;
        tally.nan = false;
        const uint8_t* m = MASK ? in.mask[ch.tensor] : nullptr;
        visit_source<K>(in.dtype[ch.tensor], [&](auto tag) {
          using T = typename decltype(tag)::type;
          int64_t from = ch.begin;
          if constexpr (std::is_same_v<K, float> && std::is_same_v<T, float>)
            if (cpu_has_avx2())
              from = fused_f32_avx2<ABS, MASK>(static_cast<const uint32_t*>(in.x[ch.tensor]), m, in.out[ch.tensor], ch.begin, ch.begin, ch.end, lo,
                                               span, buf, cap, tally);
          fused<T>(in.x[ch.tensor], m, in.out[ch.tensor], ch.begin, from, ch.end, lo, span, buf, cap, tally);
        });
        if (tally.nan) my_nan = std::min(my_nan, ch.tensor);
        segs[c] = {t, begin, tally.n - begin};
      }
      tallies[t] = tally;
      nan_tensor[t] = my_nan;
    }
    const int first_nan = *std::min_element(nan_tensor.begin(), nan_tensor.end());
    TORCH_CHECK_VALUE(first_nan == INT_MAX, "global_magnitude_masks: NaN score in tensor ", first_nan);
    int64_t n_below = 0, n_alive = 0, n_mid = 0;
    bool overflow = false;
    for (const Tally& t : tallies) n_below += t.below, n_alive += t.alive, n_mid += t.n, overflow |= t.overflow;
    const int64_t k = count.of(n_alive);
    TORCH_CHECK_VALUE(k <= n_alive, "global_magnitude_masks: k=", k, " but only ", n_alive, " entries are alive");
    if (overflow || !(n_below < k && k <= n_below + n_mid)) return false;

    // 3. Exact select among the candidates: prune keys < the want-th smallest, and the first ties.
    const int64_t want = k - n_below;
    BucketSelect<U> ranks(lo, span);
    auto each_candidate = [&](auto&& take) {
      for (int t = 0; t < T; ++t)
        for (int64_t i = 0; i < tallies[t].n; ++i) take(bufs[t][i].key);
    };
    each_candidate([&](U key) { ranks.add(key); });
    const auto [thr, less] = ranks.select(want - 1, each_candidate);
    int64_t ties = want - less;
    for (int64_t c = 0; c < nchunks; ++c) {
      const Segment s = segs[c];
      const Candidate<U>* cs = bufs[s.thread].get() + s.begin;
      bool* out = in.out[in.chunks[c].tensor] + in.chunks[c].begin;
      for (int64_t i = 0; i < s.count; ++i)
        if (cs[i].key < thr || (cs[i].key == thr && ties-- > 0)) out[cs[i].offset] = false;
    }
    return true;
  }
};

}  // namespace nptm::ops::topk_cpu

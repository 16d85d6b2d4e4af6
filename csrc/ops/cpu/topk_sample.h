// Sample-based global top-k on CPU (the fast path; Radix is the exact fallback):
//  1. Read a jittered strided sample of S positions; the alive keys among them give bounds lo <= hi
//     bracketing the k-th smallest alive key with high probability (rank k*S/N +- z standard deviations).
//  2. ONE fused pass over every tensor: count alive keys < lo, write the final mask of every key
//     outside [lo, hi] (and a provisional "keep" for those inside), and collect the alive keys inside
//     [lo, hi] with their positions into per-thread candidate buffers (O(candidates) memory).
//  3. If the k-th key lies in [lo, hi] and no buffer overflowed: select among the candidates exactly
//     (nth_element on their keys, ties pruned in position order) and prune them. Else report a miss.
#pragma once
#include <omp.h>

#include <climits>
#include <cmath>
#include <memory>
#include <vector>

#include "topk_radix.h"

namespace nptm::ops::topk_cpu {

constexpr int64_t kSampleSize = int64_t(1) << 16;
constexpr double kSampleZ = 4.5;        // bounds at +- this many standard deviations of the sample rank
constexpr int64_t kBlock = 64;          // elements per vectorized block of the fused pass
constexpr int64_t kMinSampled = 1 << 14;  // smaller inputs go straight to the radix select

inline uint64_t mix64(uint64_t z) {  // splitmix64: a fixed, deterministic jitter
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename U> struct Candidate {
  U key;
  uint32_t offset;  // within its chunk
};

template <typename K, bool ABS, bool MASK> struct SampleSelect {
  using U = typename FloatBits<K>::U;
  const Inputs& in;

  struct Segment {  // one chunk's candidates: buffer[thread][begin, begin + count)
    int thread;
    int64_t begin, count;
  };

  // Alive sample keys at positions floor(i*N/S) + jitter, i < S.
  std::vector<U> sample(int64_t S) const {
    const int64_t N = in.total();
    constexpr int64_t kBatch = 1024;
    std::vector<U> keys(S);
    std::vector<uint8_t> ok(S);
#pragma omp parallel for num_threads(in.threads) schedule(static)
    for (int64_t b = 0; b < S; b += kBatch) {
      auto pos = [&](int64_t i) { return int64_t((unsigned __int128)i * N / S); };
      int t = int(std::upper_bound(in.start.begin(), in.start.end(), pos(b)) - in.start.begin()) - 1;
      for (int64_t i = b; i < std::min(b + kBatch, S); ++i) {
        const int64_t p = pos(i) + int64_t(mix64(uint64_t(i)) % uint64_t(pos(i + 1) - pos(i)));
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

  // One chunk of the fused pass. Appends candidates at buf[n...] while n + their count <= cap.
  template <typename Src>
  static void fused_chunk(const Src& src, const uint8_t* m, bool* out, const Chunk& ch, U lo, U span, Candidate<U>* buf,
                          int64_t cap, int64_t& n, bool& overflow, int64_t& below, int64_t& alive, bool& nan) {
    for (int64_t b = ch.begin; b < ch.end; b += kBlock) {
      const int64_t e = std::min(b + kBlock, ch.end);
      uint32_t nbelow = 0, nmid = 0, nalive = 0, nnan = 0;
      for (int64_t j = b; j < e; ++j) {
        const U bits = src.bits(j);
        const U key = score_key<U, ABS>(bits);
        const bool a = !MASK || m[j];
        out[j] = a & (key >= lo);
        nbelow += a & (key < lo);
        nmid += a & (U(key - lo) <= span);
        nnan |= a & is_nan_bits<K>(bits);
        if constexpr (MASK) nalive += a;
      }
      below += nbelow;
      alive += MASK ? int64_t(nalive) : e - b;
      nan |= nnan != 0;
      if (nmid == 0 || overflow) continue;
      if (n + nmid > cap) {
        overflow = true;
        continue;
      }
      for (int64_t j = b; j < e; ++j) {  // branchless append: buf has one spare slot past cap
        const U key = src.key(j);
        buf[n] = {key, uint32_t(j - ch.begin)};
        n += (!MASK || m[j]) & (U(key - lo) <= span);
      }
    }
  }

  // Returns false when the bounds miss (the caller falls back to Radix). Throws like Radix on
  // NaN and k > alive. Requires 0 < k and kMinSampled <= N.
  bool run(int64_t k) const {
    const int64_t N = in.total(), S = std::min(N, kSampleSize);
    std::vector<U> keys = sample(S);
    const int64_t A = int64_t(keys.size());
    if (A == 0) return false;
    const double p = double(k) / double(N), r = p * double(S);
    const double delta = kSampleZ * std::sqrt(double(S) * p * (1 - p)) + 2;
    const int64_t ilo = int64_t(std::floor(r - delta)), ihi = int64_t(std::ceil(r + delta));
    U lo = 0, hi = U(~U(0));
    if (ilo >= 0 && ilo < A) {
      std::nth_element(keys.begin(), keys.begin() + ilo, keys.end());
      lo = keys[ilo];
    } else if (ilo >= A) {
      lo = *std::max_element(keys.begin(), keys.end());  // A < S: many dead entries
    }
    if (ihi < A) {
      std::nth_element(keys.begin() + std::max<int64_t>(ilo + 1, 0), keys.begin() + ihi, keys.end());
      hi = keys[ihi];
    }
    const U span = U(hi - lo);
    const double expected = (std::min<double>(ihi, A) - std::max<double>(ilo, 0) + 1) * double(N) / double(S);
    const int64_t cap = int64_t(2 * expected) + 4 * kBlock;

    // 2. The fused pass.
    const int T = in.threads;
    std::vector<std::unique_ptr<Candidate<U>[]>> bufs(T);
    std::vector<int64_t> used(T, 0), below(T, 0), alive(T, 0);
    std::vector<int> nan_tensor(T, INT_MAX);
    std::vector<char> overflow(T, 0);
    const int64_t nchunks = int64_t(in.chunks.size());
    std::vector<Segment> segs(nchunks);
#pragma omp parallel num_threads(T)
    {
      const int t = omp_get_thread_num();
      bufs[t].reset(new Candidate<U>[cap + 1]);
      bool over = false;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const Chunk ch = in.chunks[c];
        const int64_t begin = used[t];
        bool nan = false;
        visit_chunk<K, ABS, MASK>(in, ch, [&](const auto& src, const uint8_t* m) {
          fused_chunk(src, m, in.out[ch.tensor], ch, lo, span, bufs[t].get(), cap, used[t], over, below[t], alive[t], nan);
        });
        if (nan) nan_tensor[t] = std::min(nan_tensor[t], ch.tensor);
        segs[c] = {t, begin, used[t] - begin};
      }
      overflow[t] = over;
    }
    const int first_nan = *std::min_element(nan_tensor.begin(), nan_tensor.end());
    TORCH_CHECK_VALUE(first_nan == INT_MAX, "global_magnitude_masks: NaN score in tensor ", first_nan);
    int64_t n_below = 0, n_alive = 0, n_mid = 0;
    for (int t = 0; t < T; ++t) n_below += below[t], n_alive += alive[t], n_mid += used[t];
    TORCH_CHECK_VALUE(k <= n_alive, "global_magnitude_masks: k=", k, " but only ", n_alive, " entries are alive");
    for (int t = 0; t < T; ++t)
      if (overflow[t]) return false;
    if (!(n_below < k && k <= n_below + n_mid)) return false;

    // 3. Exact select among the candidates: prune keys < the want-th smallest, and the first ties.
    const int64_t want = k - n_below;
    std::vector<U> cand;
    cand.reserve(size_t(n_mid));
    for (int t = 0; t < T; ++t)
      for (int64_t i = 0; i < used[t]; ++i) cand.push_back(bufs[t][i].key);
    std::nth_element(cand.begin(), cand.begin() + (want - 1), cand.end());
    const U thr = cand[want - 1];
    int64_t ties = want - std::count_if(cand.begin(), cand.begin() + (want - 1), [&](U x) { return x < thr; });
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

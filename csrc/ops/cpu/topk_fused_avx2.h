// AVX2 form of the sample select's fused pass (topk_sample.h) for fp32 scores: 32 keys per step,
// unsigned compares by max/min, the keep bytes built with two packs and a lane permute, counts by
// movemask + popcount, and the candidates read straight off the in-bounds bitmask. Masks are written
// with streaming stores where aligned: no read-for-ownership of the output lines.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

namespace nptm::ops::topk_cpu {

template <typename U> struct Candidate {
  U key;
  uint32_t offset;  // within its chunk
};

struct Tally {  // one thread's share of the fused pass
  int64_t n = 0, below = 0, alive = 0;
  bool overflow = false, nan = false;
};

#define NPTM_AVX2 __attribute__((target("avx2,popcnt,bmi")))

// 8 dword lanes of -1/0 from each of v[0..3] -> 32 bytes of -1/0 in element order.
NPTM_AVX2 inline __m256i pack_lanes(const __m256i* v) {
  const __m256i a = _mm256_packs_epi32(v[0], v[1]), b = _mm256_packs_epi32(v[2], v[3]);
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// The fused pass over x[begin, begin + 32 * floor((end - begin) / 32)) with the semantics of
// SampleSelect::fused; returns where it stopped (the caller finishes the tail).
template <bool ABS, bool MASK>
NPTM_AVX2 int64_t fused_f32_avx2(const uint32_t* __restrict x, const uint8_t* __restrict m, bool* __restrict out, int64_t base,
                                 int64_t begin, int64_t end, uint32_t lo, uint32_t span, Candidate<uint32_t>* __restrict buf,
                                 int64_t cap, Tally& tally) {
  const __m256i vlo = _mm256_set1_epi32(int(lo)), vspan = _mm256_set1_epi32(int(span));
  const __m256i sign = _mm256_set1_epi32(INT32_MIN), magnitude = _mm256_set1_epi32(INT32_MAX), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i one = _mm256_set1_epi8(1), ones = _mm256_set1_epi8(-1);
  int64_t n = tally.n, below = 0, alive = 0;
  bool overflow = tally.overflow, nan = false;
  int64_t j = begin;
  const bool stream = reinterpret_cast<uintptr_t>(out + j) % 32 == 0;
  for (; j + 32 <= end; j += 32) {
    __m256i key[4], ge[4], mid[4], bad[4];
    __m256i any_nan = _mm256_setzero_si256();
    for (int q = 0; q < 4; ++q) {
      __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j + 8 * q));
      bad[q] = _mm256_cmpgt_epi32(_mm256_and_si256(b, magnitude), inf);
      any_nan = _mm256_or_si256(any_nan, bad[q]);
      if constexpr (ABS) {
        key[q] = _mm256_and_si256(b, magnitude);
      } else {
        b = _mm256_andnot_si256(_mm256_cmpeq_epi32(b, sign), b);  // -0.0 -> +0.0
        key[q] = _mm256_xor_si256(b, _mm256_or_si256(_mm256_srai_epi32(b, 31), sign));
      }
      ge[q] = _mm256_cmpeq_epi32(_mm256_max_epu32(key[q], vlo), key[q]);
      const __m256i d = _mm256_sub_epi32(key[q], vlo);
      mid[q] = _mm256_cmpeq_epi32(_mm256_min_epu32(d, vspan), d);
    }
    __m256i a = ones;
    if constexpr (MASK) a = _mm256_xor_si256(_mm256_cmpeq_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + j)), _mm256_setzero_si256()), ones);
    const __m256i keep = pack_lanes(ge);
    const __m256i bytes = _mm256_and_si256(_mm256_and_si256(keep, a), one);
    if (stream) _mm256_stream_si256(reinterpret_cast<__m256i*>(out + j), bytes);
    else _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), bytes);
    below += _mm_popcnt_u32(uint32_t(_mm256_movemask_epi8(_mm256_andnot_si256(keep, a))));
    if constexpr (MASK) alive += _mm_popcnt_u32(uint32_t(_mm256_movemask_epi8(a)));
    if (!_mm256_testz_si256(any_nan, any_nan)) nan |= _mm256_movemask_epi8(_mm256_and_si256(pack_lanes(bad), a)) != 0;
    uint32_t hits = uint32_t(_mm256_movemask_epi8(_mm256_and_si256(pack_lanes(mid), a)));
    if (hits == 0 || overflow) continue;
    if (n + _mm_popcnt_u32(hits) > cap) {
      overflow = true;
      continue;
    }
    alignas(32) uint32_t keys[32];
    for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(keys + 8 * q), key[q]);
    for (; hits; hits &= hits - 1) {
      const int i = __builtin_ctz(hits);
      buf[n++] = {keys[i], uint32_t(j + i - base)};
    }
  }
  _mm_sfence();  // the streamed masks are visible before the candidates' fix-up writes
  tally.n = n;
  tally.below += below;
  tally.alive += MASK ? alive : j - begin;
  tally.overflow = overflow;
  tally.nan |= nan;
  return j;
}

// NPTM_DISABLE_AVX2=1 forces the portable loop (tests compare both).
inline bool cpu_has_avx2() {
  static const bool has = !std::getenv("NPTM_DISABLE_AVX2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
  return has;
}

#undef NPTM_AVX2

}  // namespace nptm::ops::topk_cpu

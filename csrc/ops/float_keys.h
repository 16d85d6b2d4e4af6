// Order-preserving unsigned keys of float bits and the host-side digit-by-digit radix select,
// shared by the CPU and CUDA global_magnitude_masks kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#ifdef __CUDACC__
#define NPTM_HD __host__ __device__ __forceinline__
#else
#define NPTM_HD inline
#endif

namespace nptm::ops {

// Raw bits type and +Inf bits of each float dtype.
template <typename T> struct FloatBits;
template <> struct FloatBits<float> { using U = uint32_t; static constexpr U inf = 0x7F800000u; };
template <> struct FloatBits<double> { using U = uint64_t; static constexpr U inf = 0x7FF0000000000000ull; };
template <> struct FloatBits<c10::Half> { using U = uint16_t; static constexpr U inf = 0x7C00; };
template <> struct FloatBits<c10::BFloat16> { using U = uint16_t; static constexpr U inf = 0x7F80; };

template <typename U> constexpr int kKeyBits = 8 * sizeof(U);
template <typename U> constexpr U kSignBit = U(U(1) << (kKeyBits<U> - 1));

template <typename T> NPTM_HD bool is_nan_bits(typename FloatBits<T>::U b) {
  using U = typename FloatBits<T>::U;
  return U(b & U(~kSignBit<U>)) > FloatBits<T>::inf;
}

// Unsigned key whose order is the float order of |x| (ABS) or x; -0.0 and +0.0 get one key.
template <typename U, bool ABS> NPTM_HD U score_key(U b) {
  constexpr U s = kSignBit<U>;
  if (ABS) return U(b & U(~s));
  if (b == s) b = 0;
  return (b & s) ? U(~b) : U(b | s);
}

// splitmix64: a fixed, deterministic hash.
NPTM_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

NPTM_HD uint64_t mulhi64(uint64_t a, uint64_t b) {
#ifdef __CUDA_ARCH__
  return __umul64hi(a, b);
#else
  return uint64_t((unsigned __int128)a * b >> 64);
#endif
}

// Sample i < 2^log2_s of N >= 2^log2_s positions (N < 2^(63 - log2_s)): the stride start floor(i*N/S)
// plus a jitter below the next start, (splitmix64(i) * gap) >> 64. No division.
NPTM_HD int64_t sample_position(int64_t i, int64_t N, int log2_s) {
  const uint64_t lo = (uint64_t(i) * uint64_t(N)) >> log2_s, hi = (uint64_t(i + 1) * uint64_t(N)) >> log2_s;
  return int64_t(lo + mulhi64(mix64(uint64_t(i)), hi - lo));
}

// How many alive entries to prune: k, or when k < 0 round-half-even(fraction * alive) (Python's
// round(fraction * alive)), known once a pass has counted the alive entries.
struct PruneCount {
  int64_t k;
  double fraction;
  bool known() const { return k >= 0; }
  int64_t of(int64_t alive) const { return k >= 0 ? k : int64_t(std::nearbyint(fraction * double(alive))); }
};

// key >> shift for 1 <= shift <= key bits (shift == key bits gives 0: the empty prefix).
template <typename U> NPTM_HD uint64_t key_prefix(U key, int shift) { return uint64_t(U(key >> (shift - 1)) >> 1); }

// Finds the k-th smallest alive key (1-based) one digit at a time, high digits first. After each
// histogram of the keys sharing `prefix` (the resolved high bits, keys compared as key >> shift),
// pick the digit holding rank `want`. Stops early once every key sharing the prefix is pruned.
// Then: prune key >> shift < prefix, and of the count_eq keys with key >> shift == prefix the
// first `want` in position order (all of them when want == count_eq).
struct RadixSelect {
  int key_bits, digit_bits;
  int64_t want;
  int shift;
  uint64_t prefix = 0;
  int64_t count_eq = -1;

  RadixSelect(int key_bits, int digit_bits, int64_t k) : key_bits(key_bits), digit_bits(digit_bits), want(k), shift(key_bits) {}
  bool done() const { return shift == 0 || want == count_eq; }
  int width() const { return std::min(digit_bits, shift); }
  // Shift of the digit the next histogram counts.
  int digit_shift() const { return shift - width(); }
  void consume(const int64_t* hist) {
    const int w = width();
    int64_t before = 0;
    int64_t b = 0;
    for (; b < (int64_t(1) << w) - 1 && before + hist[b] < want; ++b) before += hist[b];
    prefix = (prefix << w) | uint64_t(b);
    want -= before;
    count_eq = hist[b];
    shift -= w;
  }
};

// How the final pass turns (alive, key) into the output mask.
enum class Rule { keep_alive, prune_all, prune_le, prune_ties };

}  // namespace nptm::ops

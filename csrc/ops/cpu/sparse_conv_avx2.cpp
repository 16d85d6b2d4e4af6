// sparse_conv2d's AVX2 + FMA variant (8 floats per vector, up to 8 vectors = 64 outputs per tile), compiled
// for that target by the pragma below and called only on CPUs that report avx2 and fma.
#include <immintrin.h>

#include "../sparse_conv.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace nptm::ops::sparse_conv {
namespace {

struct Avx2 {
  static constexpr int L = 8, KMAX = 8;
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_n(const float* p, int n) {  // masked: no read past the n floats (and no fault)
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes));
  }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, V a) { _mm256_store_ps(p, a); }
};

#include "sparse_conv_tiles.h"

}  // namespace

void run_avx2(const Job& job) { run_tiles<Avx2>(job); }

}  // namespace nptm::ops::sparse_conv

#pragma GCC pop_options

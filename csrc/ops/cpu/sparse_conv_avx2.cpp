// sparse_conv2d's and depthwise_conv2d's AVX2 + FMA variant (8 floats per vector; sparse_conv2d: up to 8 vectors =
// 64 outputs per tile), compiled for that target by the pragma below and called only on CPUs that report avx2 and fma.
#include <immintrin.h>

#include "../depthwise_conv.h"
#include "../sparse_conv.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace nptm::ops::sparse_conv {
namespace {

struct Avx2 {
  static constexpr int L = kAvx2Lanes, KMAX = kAvx2MaxVectors, REGS = kAvx2Regs;
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i first(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static V load_n(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }  // no read past n floats, no fault
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }  // b where either is NaN
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static void store(float* p, V a) { _mm256_store_ps(p, a); }
  static void storeu(float* p, V a) { _mm256_storeu_ps(p, a); }
  static void store_n(float* p, V a, int n) { _mm256_maskstore_ps(p, first(n), a); }
  static void even_odd(V a, V b, V& e, V& o) {  // of the 16 floats a, b: e = the even ones, o = the odd ones
    // shuffle within 128-bit lanes, then order the 64-bit pairs
    e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
    o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
  }
};

#include "sparse_conv_tiles.h"
#include "depthwise_conv_rows.h"

}  // namespace

void run_avx2(const Job& job) { run_tiles<Avx2>(job); }

}  // namespace nptm::ops::sparse_conv

namespace nptm::ops::depthwise {

void channel_avx2(const Job& job, int64_t item, float* scratch) { sparse_conv::dw::channel<sparse_conv::Avx2>(job, item, scratch); }

}  // namespace nptm::ops::depthwise

#pragma GCC pop_options

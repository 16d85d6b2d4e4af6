// sparse_conv2d's and depthwise_conv2d's AVX-512 variant (16 floats per vector; sparse_conv2d: up to 8 vectors =
// 128 outputs per tile), compiled for that target by the pragma below and called only on CPUs that report avx512f.
#include <immintrin.h>

#include "../depthwise_conv.h"
#include "../sparse_conv.h"

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

namespace nptm::ops::sparse_conv {
namespace {

struct Avx512 {
  static constexpr int L = kAvx512Lanes, KMAX = kAvx512MaxVectors, REGS = kAvx512Regs;
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static __mmask16 first(int n) { return __mmask16((1u << n) - 1); }
  static V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }  // no read past n floats, no fault
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }  // b where either is NaN
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static void store(float* p, V a) { _mm512_store_ps(p, a); }
  static void storeu(float* p, V a) { _mm512_storeu_ps(p, a); }
  static void store_n(float* p, V a, int n) { _mm512_mask_storeu_ps(p, first(n), a); }
  static void even_odd(V a, V b, V& e, V& o) {  // of the 32 floats a, b: e = the even ones, o = the odd ones
    const __m512i i = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    e = _mm512_permutex2var_ps(a, i, b);
    o = _mm512_permutex2var_ps(a, _mm512_add_epi32(i, _mm512_set1_epi32(1)), b);
  }
};

#include "sparse_conv_tiles.h"
#include "depthwise_conv_rows.h"

}  // namespace

void run_avx512(const Job& job) { run_tiles<Avx512>(job); }

}  // namespace nptm::ops::sparse_conv

namespace nptm::ops::depthwise {

void channel_avx512(const Job& job, int64_t item, float* scratch) { sparse_conv::dw::channel<sparse_conv::Avx512>(job, item, scratch); }

}  // namespace nptm::ops::depthwise

#pragma GCC pop_options

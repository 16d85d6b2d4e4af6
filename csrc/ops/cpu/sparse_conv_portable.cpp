// sparse_conv2d's portable loop: vectors of 4 floats as plain arrays (the compiler's baseline SIMD).
// Runs where the CPU lacks AVX2, and when NPTM_DISABLE_AVX2 is set (tests run it there too).
#include "../sparse_conv.h"

namespace nptm::ops::sparse_conv {
namespace {

struct Portable {
  static constexpr int L = 4, KMAX = 16;
  struct V {
    float v[L];
  };
  static V zero() { return {}; }
  static V set1(float x) { return {{x, x, x, x}}; }
  static V load(const float* p) { return {{p[0], p[1], p[2], p[3]}}; }
  static V load_n(const float* p, int n) {
    V r{};
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < L; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static void store(float* p, V a) {
    for (int i = 0; i < L; ++i) p[i] = a.v[i];
  }
};

#include "sparse_conv_tiles.h"

}  // namespace

void run_portable(const Job& job) { run_tiles<Portable>(job); }

}  // namespace nptm::ops::sparse_conv

// sparse_conv2d's and depthwise_conv2d's portable loop: vectors of 4 floats as plain arrays (the compiler's baseline
// SIMD). Runs where the CPU lacks AVX2, and when NPTM_DISABLE_AVX2 is set (tests run it there too).
#include "../depthwise_conv.h"
#include "../sparse_conv.h"

namespace nptm::ops::sparse_conv {
namespace {

struct Portable {
  static constexpr int L = kPortableLanes, KMAX = kPortableMaxVectors, REGS = kPortableRegs;
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
  static V add(V a, V b) {
    for (int i = 0; i < L; ++i) a.v[i] += b.v[i];
    return a;
  }
  static V max(V a, V b) {  // b where either is NaN, as maxps
    for (int i = 0; i < L; ++i) b.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
    return b;
  }
  static V min(V a, V b) {
    for (int i = 0; i < L; ++i) b.v[i] = a.v[i] < b.v[i] ? a.v[i] : b.v[i];
    return b;
  }
  static void store(float* p, V a) { store_n(p, a, L); }
  static void storeu(float* p, V a) { store_n(p, a, L); }
  static void store_n(float* p, V a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static void even_odd(V a, V b, V& e, V& o) {
    for (int i = 0; i < L; ++i) {
      e.v[i] = i < L / 2 ? a.v[2 * i] : b.v[2 * i - L];
      o.v[i] = i < L / 2 ? a.v[2 * i + 1] : b.v[2 * i + 1 - L];
    }
  }
};

#include "sparse_conv_tiles.h"
#include "depthwise_conv_rows.h"

}  // namespace

void run_portable(const Job& job) { run_tiles<Portable>(job); }

}  // namespace nptm::ops::sparse_conv

namespace nptm::ops::depthwise {

void channel_portable(const Job& job, int64_t item, float* scratch) { sparse_conv::dw::channel<sparse_conv::Portable>(job, item, scratch); }

}  // namespace nptm::ops::depthwise

// The vector ISA the CPU kernels (sparse_conv2d, depthwise_conv2d) run: AVX-512, AVX2 + FMA or the portable loop,
// from the CPU's flags; NPTM_DISABLE_AVX512 / NPTM_DISABLE_AVX2 force the narrower ones (read on every call).
#pragma once
#include <cstdlib>

namespace nptm::ops {

enum class Isa { portable, avx2, avx512 };

inline Isa pick_isa() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx2 || std::getenv("NPTM_DISABLE_AVX2")) return Isa::portable;
  return avx512 && !std::getenv("NPTM_DISABLE_AVX512") ? Isa::avx512 : Isa::avx2;
}

}  // namespace nptm::ops

// depthwise_conv2d's work description, shared by the CPU kernel (cpu/depthwise_conv2d_kernel.cpp) and the ISA
// variants (cpu/sparse_conv_{portable,avx2,avx512}.cpp include cpu/depthwise_conv_rows.h). Plain C++ only.
//
// A work item is one (image, channel): its input is copied into stride-phase planes in a per-thread buffer (the
// layout of sparse_conv.h: plane (a, b) holds x_padded[sh*i + a, sw*j + b], so that every tap reads a run of
// inputs for a run of outputs, whatever the stride), then each output row is computed in vectors of output
// pixels from those planes, the weights broadcast once per channel, bias + residual + clamp before the store.
#pragma once
#include <cstdint>

namespace nptm::ops::depthwise {

struct Job {
  const float* in;            // x[0, 0, 0, 0]
  int64_t sn, sc, sy, sx;     // its strides in floats (any layout)
  const float* weight;        // [C, kh * kw]
  const float* bias;          // [C] or null
  const float* residual;      // [N, C, Ho, Wo] contiguous or null
  float* out;                 // [N, C, Ho, Wo] contiguous
  int64_t C, H, W, Ho, Wo;
  int kh, kw, sh, sw, ph, pw;
  int64_t Hq, Wq, plane;      // rows and columns of a phase plane; floats from one plane to the next
  const unsigned char* used;  // [sh * sw]: whether some tap reads phase plane (a, b), at a * sw + b
  const int32_t* offsets;     // [kh * kw]: each tap's offset in the planes from its output's grid position y * Wq + x
  int fast;                   // the unrolled kernel: 10 * k + s (31, 32, 51, 52, 71), 231 (3x3 dilated by 2); 0: taps loop
  float lo, hi;               // clamp bounds (-inf / inf: none); NaN passes through
};

// Floats a work item's planes need (the last vector of a row may read past the last plane: slack, never stored).
inline int64_t scratch_floats(const Job& j) { return int64_t(j.sh) * j.sw * j.plane + 64; }

void channel_portable(const Job& job, int64_t item, float* scratch);
void channel_avx2(const Job& job, int64_t item, float* scratch);
void channel_avx512(const Job& job, int64_t item, float* scratch);

}  // namespace nptm::ops::depthwise

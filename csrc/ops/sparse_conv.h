// sparse_conv2d's work description, shared by the CPU kernel (csrc/ops/cpu/sparse_conv2d_kernel.cpp) and its
// ISA variants (cpu/sparse_conv_{portable,avx2,avx512}.cpp). Plain C++ only: the ISA files compile it under
// their own target pragma, so nothing from ATen or the standard library may be instantiated through it.
//
// Input layout ("planes"): for each image, channel c and stride phase (a, b) one Hq x Wq plane holding
// x_padded[sh*i + a, sw*j + b] (x_padded: x with its zero padding). Weight (oc, ic, ky, kx) then reads the
// constant offset ((ic*sh + a)*sw + b)*Hq*Wq + ((ky*dh)/sh)*Wq + (kx*dw)/sw, a = (ky*dh)%sh, b = (kx*dw)%sw,
// from output grid position q = y*Wq + x: a run of neighbouring outputs reads a run of neighbouring inputs.
// Grid columns x >= Wo are computed and dropped. With stride 1 and no padding the planes are x itself.
//
// Weight rows: with block == 1 a row is one output channel and each stored weight one (value, offset). With
// block K > 1 (register-blocked) a row is K consecutive output channels of one group (the group's last row
// may be narrower: the channels past the group's end are padding) and each stored entry is K values (one per
// channel, zeros included) at one shared offset: one activation vector load feeds K FMAs.
#pragma once
#include <cstdint>

namespace nptm::ops::sparse_conv {

struct Job {
  const float* in;           // planes of image 0
  const float* in_end;       // end of the readable input (whole-vector loads may run up to it)
  int64_t in_image;          // floats from one image's planes to the next
  int64_t in_group;          // floats from one group's planes to the next
  int64_t in_channel;        // floats from one input channel's planes to the next
  const float* values;       // stored weights, grouped by row (row_ptr); block floats per entry
  const int32_t* offsets;    // their input offsets (see above), within the row's group
  const int64_t* row_ptr;    // [rows + 1]; rows = Cout (block 1) or groups * rows_per_group
  const int64_t* chunks;     // row ranges of the work items: [n_chunks + 1]
  int64_t n_chunks;
  const float* bias;         // [Cout] or null
  const float* residual;     // [N, Cout, Ho, Wo] contiguous or null: added before the clamp
  float* out;                // [N, Cout, Ho, Wo] contiguous
  float lo, hi;              // clamp bounds (-inf / inf: none); NaN passes through
  int64_t N, Cout, cout_per_group, Ho, Wo, Wq;
  int block;                 // output channels per row: 1, 2, 4 or 8
  int64_t rows_per_group;    // ceil(cout_per_group / block)
  int vectors;               // per tile: 1..kMaxVectors of the ISA (block > 1: a multiple of block_vectors where P allows)
  int threads;
};

// Floats per vector and most vectors per tile of each variant.
constexpr int kPortableLanes = 4, kPortableMaxVectors = 16;
constexpr int kAvx2Lanes = 8, kAvx2MaxVectors = 8;
constexpr int kAvx512Lanes = 16, kAvx512MaxVectors = 8;
constexpr int kPortableRegs = 16, kAvx2Regs = 16, kAvx512Regs = 32;  // vector registers

// Vectors of output positions per register tile of a block-K row: K x V accumulators, V activations and one
// broadcast weight fit the registers.
constexpr int block_vectors(int regs, int max_vectors, int block) {
  const int v = (regs - 2) / (block + 1);
  return v < 1 ? 1 : v > max_vectors ? max_vectors : v;
}

// Grid positions computed per image: rows 0..Ho-2 in full, the last row up to Wo.
inline int64_t grid_positions(const Job& j) { return j.Ho == 0 || j.Wo == 0 ? 0 : (j.Ho - 1) * j.Wq + j.Wo; }

void run_portable(const Job& job);
void run_avx2(const Job& job);
void run_avx512(const Job& job);

}  // namespace nptm::ops::sparse_conv

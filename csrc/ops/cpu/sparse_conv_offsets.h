// sparse_conv2d's tap offsets (sparse_conv.h: the input offset of each stored entry within its group's planes),
// cached per (taps tensor, input geometry): a model calls each layer with the same geometry again and again.
#pragma once
#include <ATen/ATen.h>

namespace nptm::ops::sparse_conv {

struct Geometry {
  int64_t cin_g, kh, kw, sh, sw, dh, dw;
  int64_t plane, Wq;  // floats from one plane to the next, grid row length
};

// offsets[j] for taps[j] = (ic * kh + ky) * kw + kx; a tap outside [0, cin_g * kh * kw) raises IndexError.
// Cached while the taps' storage lives, its data pointer, size and version counter (in-place writes) are the same;
// inference tensors (no version counter) and non-contiguous taps are computed on every call.
at::Tensor tap_offsets(const at::Tensor& taps, const Geometry& g);

}  // namespace nptm::ops::sparse_conv

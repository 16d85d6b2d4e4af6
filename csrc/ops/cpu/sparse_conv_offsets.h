// sparse_conv2d's tap offsets (sparse_conv.h: the input offset of each stored entry within its group's planes),
// cached per (taps tensor, input geometry): a model calls each layer with the same geometry again and again.
#pragma once
#include <ATen/ATen.h>

namespace nptm::ops::sparse_conv {

struct Geometry {
  int64_t cin_g, kh, kw, sh, sw, dh, dw;
  int64_t plane, Wq;  // floats from one plane to the next, grid row length
};

// offsets[j] for taps[j] = (ic * kh + ky) * kw + kx; a tap outside [0, cin_g * kh * kw) raises IndexError, a row
// (row_ptr, checked before) whose input channels go backwards raises ValueError: the kernel bounds a row's loads by
// the channel of its last entry. Cached while the storages of taps and row_ptr live and their data pointers, sizes
// and version counters (in-place writes) are the same; inference tensors (no version counter) and non-contiguous
// ones are computed on every call.
at::Tensor tap_offsets(const at::Tensor& taps, const at::Tensor& row_ptr, const Geometry& g);

}  // namespace nptm::ops::sparse_conv

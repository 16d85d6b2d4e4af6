// The nptm operators: schemas live in the op files (csrc/ops/*.cpp), kernels in cpu/ and cuda/.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "float_keys.h"

namespace nptm::ops {

// apply_masks_: tensors[i].view(-1)[j] = 0 where !masks[i].view(-1)[j]. Same length lists.
void check_apply_masks(at::TensorList tensors, at::TensorList masks);

// global_magnitude_masks: prune the k smallest alive scores (|score| when use_abs) across all
// tensors; ties pruned in (tensor, flat index) order. masks empty = all alive. Returns bool masks.
// With fraction (k must then be -1) the kernel prunes round(fraction * alive) and counts alive itself.
// mixed_dtypes: the kernel accepts float dtypes mixed in one call (else all must be scores[0]'s).
PruneCount check_global_magnitude_masks(at::TensorList scores, at::TensorList masks, int64_t k, std::optional<double> fraction,
                                        bool mixed_dtypes = false);

// gather_channels: out[i] = tensors[i].index_select(dims[i], indices[i]).contiguous().
// Returns the dims normalized to [0, ndim).
std::vector<int64_t> check_gather_channels(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices);

// sparse_conv2d: the sizes of a checked call.
struct SparseConvShape {
  int64_t n, cout, cin_g, kh, kw, groups, ho, wo;
  int64_t block, rows;  // output channels per weight row (1: unstructured) and the rows
};
SparseConvShape check_sparse_conv2d(const at::Tensor& input, const at::Tensor& values, const at::Tensor& taps, const at::Tensor& row_ptr,
                                    at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                                    const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups);
// The variant sparse_conv2d runs now: "avx512", "avx2" or "portable" (CPU flags and NPTM_DISABLE_* env).
std::string sparse_conv2d_isa();

// depthwise_conv2d: checks a call; returns the output's sizes [N, C, Ho, Wo].
std::array<int64_t, 4> check_depthwise_conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                              const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation);

}  // namespace nptm::ops

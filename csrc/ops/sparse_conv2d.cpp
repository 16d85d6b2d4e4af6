// sparse_conv2d: a 2-D convolution whose weight is compressed per output channel, with dense activations.
// CPU only, by design: no CUDA kernel is wanted for this op (GPUs run pruned models through N:M sparsity).
#include <torch/library.h>

#include "checks.h"
#include "ops.h"

namespace nptm::ops {

SparseConvShape check_sparse_conv2d(const at::Tensor& input, const at::Tensor& values, const at::Tensor& taps, const at::Tensor& row_ptr,
                                    at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias,
                                    const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(weight_shape.size() == 4, "sparse_conv2d: weight_shape must be [out, in/groups, kh, kw], got ", weight_shape);
  check_conv_pairs("sparse_conv2d", stride, padding, dilation);
  check_float_cpu("sparse_conv2d", input, "input");
  check_float_cpu("sparse_conv2d", values, "values");
  TORCH_CHECK_VALUE(input.dim() == 4, "sparse_conv2d: input must be [N, C, H, W], got ", input.sizes());
  SparseConvShape s{input.size(0), weight_shape[0], weight_shape[1], weight_shape[2], weight_shape[3], groups, 0, 0, 1, 0};
  TORCH_CHECK_VALUE(s.cout >= 0 && s.cin_g > 0 && s.kh > 0 && s.kw > 0, "sparse_conv2d: bad weight_shape ", weight_shape);
  TORCH_CHECK_VALUE(groups > 0 && s.cout % groups == 0, "sparse_conv2d: groups=", groups, " must divide the ", s.cout, " output channels");
  TORCH_CHECK_VALUE(input.size(1) == s.cin_g * groups, "sparse_conv2d: input has ", input.size(1), " channels but the weight expects ",
                    s.cin_g * groups, " (", s.cin_g, " per group x ", groups, " groups)");
  s.ho = (input.size(2) + 2 * padding[0] - dilation[0] * (s.kh - 1) - 1) / stride[0] + 1;
  s.wo = (input.size(3) + 2 * padding[1] - dilation[1] * (s.kw - 1) - 1) / stride[1] + 1;
  TORCH_CHECK_VALUE(s.ho > 0 && s.wo > 0, "sparse_conv2d: input ", input.sizes(), " is smaller than the dilated kernel");
  TORCH_CHECK_VALUE((values.dim() == 1 || values.dim() == 2) && taps.dim() == 1 && taps.numel() == values.size(0),
                    "sparse_conv2d: values must be [nnz] or [nnz, block] and taps [nnz], got ", values.sizes(), " and ", taps.sizes());
  s.block = values.dim() == 2 ? values.size(1) : 1;
  TORCH_CHECK_VALUE(s.block == 1 || s.block == 2 || s.block == 4 || s.block == 8,
                    "sparse_conv2d: the block (values.size(1)) must be 1, 2, 4 or 8, got ", s.block);
  s.rows = groups * ((s.cout / groups + s.block - 1) / s.block);
  TORCH_CHECK_VALUE(taps.scalar_type() == at::kInt && taps.device().is_cpu(), "sparse_conv2d: taps must be int32 on CPU");
  TORCH_CHECK_VALUE(row_ptr.scalar_type() == at::kLong && row_ptr.device().is_cpu() && row_ptr.dim() == 1 && row_ptr.numel() == s.rows + 1,
                    "sparse_conv2d: row_ptr must be int64 [", s.rows + 1, "] on CPU (", s.rows, " rows of ", s.block,
                    " output channels), got ", row_ptr.scalar_type(), " ", row_ptr.sizes());
  if (bias) {
    check_float_cpu("sparse_conv2d", *bias, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->numel() == s.cout, "sparse_conv2d: bias must be [", s.cout, "], got ", bias->sizes());
  }
  if (residual) {
    check_float_cpu("sparse_conv2d", *residual, "residual");
    TORCH_CHECK_VALUE(residual->sizes() == at::IntArrayRef({s.n, s.cout, s.ho, s.wo}), "sparse_conv2d: residual must be [", s.n, ", ",
                      s.cout, ", ", s.ho, ", ", s.wo, "], got ", residual->sizes());
  }
  return s;
}

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  // Weight (out, in/groups, kh, kw) compressed per output channel: row_ptr[oc]..row_ptr[oc+1] index its
  // nonzeros, values = the weights, taps = (ic * kh + ky) * kw + kx within the group. out = clamp(conv +
  // bias + residual, clamp_min, clamp_max). Products are formed with the stored weights only.
  // Blocked (values [nnz, B], B = 2, 4 or 8): row r is output channels g * cpg + (r % R) * B + b, b < B, of
  // group g = r / R (R = ceil(cpg / B) rows per group, cpg = out / groups; channels past the group's end are
  // ignored), and values[j, b] is channel b's weight at taps[j].
  m.def("sparse_conv2d(Tensor input, Tensor values, Tensor taps, Tensor row_ptr, int[] weight_shape, Tensor? bias=None, "
        "Tensor? residual=None, int[2] stride=1, int[2] padding=0, int[2] dilation=1, int groups=1, float? clamp_min=None, "
        "float? clamp_max=None) -> Tensor");
}

}  // namespace nptm::ops

// depthwise_conv2d: a dense depthwise 2-D convolution (groups = in = out channels) on NCHW float32 inputs, bias,
// residual and clamp fused: what MobileNet-like nets keep dense beside their sparse 1x1 convs.
// CPU only, by design, like sparse_conv2d: no CUDA kernel is wanted for this op (GPUs run cuDNN's).
#include <torch/library.h>

#include "checks.h"
#include "ops.h"

namespace nptm::ops {

std::array<int64_t, 4> check_depthwise_conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                              const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_conv_pairs("depthwise_conv2d", stride, padding, dilation);
  check_float_cpu("depthwise_conv2d", input, "input");
  check_float_cpu("depthwise_conv2d", weight, "weight");
  TORCH_CHECK_VALUE(input.dim() == 4, "depthwise_conv2d: input must be [N, C, H, W], got ", input.sizes());
  const int64_t c = input.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == c && weight.size(1) == 1 && weight.size(2) > 0 && weight.size(3) > 0 && c > 0,
                    "depthwise_conv2d: weight must be [C, 1, kh, kw] with C = the input's ", c, " channels (C > 0), got ", weight.sizes());
  const int64_t ho = (input.size(2) + 2 * padding[0] - dilation[0] * (weight.size(2) - 1) - 1) / stride[0] + 1;
  const int64_t wo = (input.size(3) + 2 * padding[1] - dilation[1] * (weight.size(3) - 1) - 1) / stride[1] + 1;
  TORCH_CHECK_VALUE(input.size(2) + 2 * padding[0] >= dilation[0] * (weight.size(2) - 1) + 1 &&
                        input.size(3) + 2 * padding[1] >= dilation[1] * (weight.size(3) - 1) + 1 && ho > 0 && wo > 0,
                    "depthwise_conv2d: input ", input.sizes(), " is smaller than the dilated kernel");
  if (bias) {
    check_float_cpu("depthwise_conv2d", *bias, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->numel() == c, "depthwise_conv2d: bias must be [", c, "], got ", bias->sizes());
  }
  if (residual) {
    check_float_cpu("depthwise_conv2d", *residual, "residual");
    TORCH_CHECK_VALUE(residual->sizes() == at::IntArrayRef({input.size(0), c, ho, wo}), "depthwise_conv2d: residual must be [",
                      input.size(0), ", ", c, ", ", ho, ", ", wo, "], got ", residual->sizes());
  }
  return {input.size(0), c, ho, wo};
}

TORCH_LIBRARY_FRAGMENT(nptm, m) {
  // out = clamp(conv2d(input, weight, groups=C) + bias + residual, clamp_min, clamp_max); weight [C, 1, kh, kw],
  // zero padding; NaN passes the clamp. The output is contiguous (NCHW) whatever the input's layout.
  m.def("depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias=None, Tensor? residual=None, int[2] stride=1, "
        "int[2] padding=0, int[2] dilation=1, float? clamp_min=None, float? clamp_max=None) -> Tensor");
}

}  // namespace nptm::ops

// depthwise_conv2d on CPU: one work item per (image, channel), split over the threads (OpenMP); each lays its
// channel out as stride-phase planes in a per-thread buffer and runs the ISA variant the CPU supports (isa.h) on
// them (depthwise_conv.h, cpu/depthwise_conv_rows.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <omp.h>

#include <limits>
#include <vector>

#include "../depthwise_conv.h"
#include "../ops.h"
#include "isa.h"
#include "scratch.h"

namespace nptm::ops {
namespace {

// Work (MACs + outputs) below which one thread runs the layer: a parallel region costs a few microseconds.
constexpr int64_t kSerialWork = 1 << 16;

// A buffer of at least n floats per thread, kept between calls (the caller's thread owns it; 64-byte aligned).
float* scratch(int64_t n) {
  thread_local ScratchBuffer b;
  return b.get(n, 64, false, "depthwise_conv2d", "the input planes");
}

at::Tensor depthwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight_in, const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, std::optional<double> clamp_min, std::optional<double> clamp_max) {
  const auto [n, c, ho, wo] = check_depthwise_conv2d(input, weight_in, bias, residual, stride, padding, dilation);
  auto out = at::empty({n, c, ho, wo}, input.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const auto weight = weight_in.contiguous();
  const auto b = bias ? bias->contiguous() : at::Tensor();
  const auto res = residual ? residual->contiguous() : at::Tensor();
  const int kh = int(weight.size(2)), kw = int(weight.size(3)), sh = int(stride[0]), sw = int(stride[1]);
  const int dh = int(dilation[0]), dw = int(dilation[1]);
  const int64_t H = input.size(2), W = input.size(3);
  const int64_t Hq = (H + 2 * padding[0] + sh - 1) / sh, Wq = (W + 2 * padding[1] + sw - 1) / sw;
  const int64_t plane = (Hq * Wq + 15) / 16 * 16;  // planes start on cache lines
  TORCH_CHECK_VALUE(int64_t(sh) * sw * plane < std::numeric_limits<int32_t>::max(), "depthwise_conv2d: one channel of ",
                    input.sizes(), " is too large");
  std::vector<int32_t> offsets(size_t(kh) * kw);
  std::vector<unsigned char> used(size_t(sh) * sw, 0);
  for (int ky = 0; ky < kh; ++ky)
    for (int kx = 0; kx < kw; ++kx) {
      const int a = ky * dh % sh, bb = kx * dw % sw;
      used[a * sw + bb] = 1;
      offsets[ky * kw + kx] = int32_t((a * sw + bb) * plane + (ky * dh / sh) * Wq + kx * dw / sw);
    }
  const bool square = kh == kw && sh == sw && dh == dw;
  const int fast = !square ? 0 : dh == 1 && (kh == 3 || kh == 5) && sh <= 2 ? 10 * kh + sh
                               : dh == 1 && kh == 7 && sh == 1 ? 71 : dh == 2 && kh == 3 && sh == 1 ? 231 : 0;
  constexpr float inf = std::numeric_limits<float>::infinity();
  const auto st = input.strides();
  const depthwise::Job job{input.const_data_ptr<float>(), st[0], st[1], st[2], st[3], weight.const_data_ptr<float>(),
                           b.defined() ? b.const_data_ptr<float>() : nullptr, res.defined() ? res.const_data_ptr<float>() : nullptr,
                           out.data_ptr<float>(), c, H, W, ho, wo, kh, kw, sh, sw, int(padding[0]), int(padding[1]), Hq, Wq, plane,
                           used.data(), offsets.data(), fast,
                           clamp_min ? float(*clamp_min) : -inf, clamp_max ? float(*clamp_max) : inf};
  void (*run)(const depthwise::Job&, int64_t, float*) = depthwise::channel_portable;
  // Rows of up to 8 outputs (MobileNetV2's 7²) run 8-float vectors: a 16-float one would compute 9+ dropped lanes.
  if (pick_isa() == Isa::avx512) run = wo > 8 ? depthwise::channel_avx512 : depthwise::channel_avx2;
  else if (pick_isa() == Isa::avx2) run = depthwise::channel_avx2;
  const int64_t items = n * c, per_thread = (depthwise::scratch_floats(job) + 15) / 16 * 16;
  const int threads = items * ho * wo * (kh * kw + 1) < kSerialWork ? 1 : int(std::min<int64_t>(at::get_num_threads(), items));
  float* buffers = scratch(per_thread * threads);  // allocated here: nothing inside the parallel region throws
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t it = 0; it < items; ++it) run(job, it, buffers + omp_get_thread_num() * per_thread);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("depthwise_conv2d", TORCH_FN(depthwise_conv2d_cpu)); }
}  // namespace nptm::ops

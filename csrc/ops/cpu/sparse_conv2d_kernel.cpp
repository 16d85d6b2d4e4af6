// sparse_conv2d on CPU: lay the input out as stride-phase planes (sparse_conv.h; no copy for stride 1
// without padding unless the channels are misaligned), turn each nonzero's tap into its constant input offset
// (cached: sparse_conv_offsets.h), split the output channels into work items of equal nonzero counts, and run
// the ISA variant the CPU supports (AVX-512, AVX2 + FMA, or the portable loop: isa.h).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "../ops.h"
#include "../sparse_conv.h"
#include "isa.h"
#include "scratch.h"
#include "sparse_conv_offsets.h"

namespace nptm::ops {
namespace {

using sparse_conv::Job;

constexpr size_t kHuge = size_t(2) << 20;
constexpr int64_t kLayoutGrain = 1 << 16;  // floats of input planes per thread's share of the layout pass, at least
// Work (MACs + output positions) below which one thread runs the layer: a parallel region costs a few microseconds,
// more on a busy machine (ResNet-50's near-empty layer4 3x3 convs: 0.2 M).
constexpr int64_t kSerialWork = 1 << 18;
constexpr int64_t kRealignWeights = 32;  // stored values per input channel from which a misaligned input is copied

struct Lanes {
  int lanes, max_vectors, regs;
};

Lanes lanes_of(Isa isa) {
  if (isa == Isa::avx512) return {sparse_conv::kAvx512Lanes, sparse_conv::kAvx512MaxVectors, sparse_conv::kAvx512Regs};
  if (isa == Isa::avx2) return {sparse_conv::kAvx2Lanes, sparse_conv::kAvx2MaxVectors, sparse_conv::kAvx2Regs};
  return {sparse_conv::kPortableLanes, sparse_conv::kPortableMaxVectors, sparse_conv::kPortableRegs};
}

// Vectors per tile: the tile's input rows (in/groups channels x kernel rows) should stay in L2. Wide tiles pay
// the weight's load and broadcast once per 8 FMAs; an L1-sized budget (24 KiB) gave 1 vector to the 512-2048
// channel 1x1 convs of ResNet-50 and ran them 1.3-2x slower (2-core EPYC, 1 MiB L2 per core).
// Blocked rows: a multiple of the register tile's vectors (the tile is walked in register tiles).
int tile_vectors(Lanes l, int64_t cin_g, int64_t kh, int64_t P, int64_t block) {
  static const int64_t set = std::getenv("NPTM_SPARSE_CACHE") ? std::atoll(std::getenv("NPTM_SPARSE_CACHE")) : 0;
  static const int64_t budget = set > 0 ? set : 1 << 20;
  static const int64_t fixed = std::getenv("NPTM_SPARSE_VECTORS") ? std::atoll(std::getenv("NPTM_SPARSE_VECTORS")) : 0;
  int64_t k = fixed ? fixed : budget / (4 * cin_g * kh * l.lanes);
  k = std::clamp<int64_t>(k, 1, l.max_vectors);
  if (block > 1) {
    const int64_t v = sparse_conv::block_vectors(l.regs, l.max_vectors, int(block));
    k = std::max<int64_t>(k / v, 1) * v;
  }
  return int(std::clamp<int64_t>(k, 1, (P + l.lanes - 1) / l.lanes));
}

struct Planes {
  const float* data;
  int64_t image, group, plane, Wq;  // plane: floats from one plane to the next (>= Hq * Wq)
};

struct Conv {
  int64_t sh, sw, ph, pw, dh, dw;
};

// A per-thread buffer of at least n floats, 2 MiB aligned and in huge pages where the kernel allows.
float* scratch(int64_t n) {
  thread_local ScratchBuffer b;
  return b.get(n, kHuge, true, "sparse_conv2d", "the input planes");
}

// One Hq x Wq plane: dst[i, j] = x[sh*i + a - ph, sw*j + b - pw] (0 outside x). The zeros between two rows' data
// (one row's right padding, the next one's left) are one run. Rows are short (7-230 floats): the loops stay
// inline vector code instead of becoming memcpy / memset calls.
__attribute__((optimize("no-tree-loop-distribute-patterns"))) void fill_plane(float* dst, const float* src, int64_t H, int64_t W,
                                                                              int64_t sH, int64_t sW, const Conv& c, int64_t a,
                                                                              int64_t b, int64_t Hq, int64_t Wq) {
  const int64_t j0 = std::clamp<int64_t>((c.pw - b + c.sw - 1) / c.sw, 0, Wq);
  const int64_t j1 = std::clamp<int64_t>((W + c.pw - b + c.sw - 1) / c.sw, j0, Wq);
  const int64_t i0 = std::clamp<int64_t>((c.ph - a + c.sh - 1) / c.sh, 0, Hq);
  const int64_t i1 = std::clamp<int64_t>((H + c.ph - a + c.sh - 1) / c.sh, i0, Hq);
  if (i0 == i1 || j0 == j1) return (void)std::memset(dst, 0, Hq * Wq * sizeof(float));
  std::memset(dst, 0, (i0 * Wq + j0) * sizeof(float));
  for (int64_t i = i0; i < i1; ++i) {
    float* d = dst + i * Wq;
    const float* s = src + (c.sh * i + a - c.ph) * sH + (c.sw * j0 + b - c.pw) * sW;
    if (c.sw == 1 && sW == 1)
      for (int64_t j = j0; j < j1; ++j) d[j] = s[j - j0];
    else
      for (int64_t j = j0; j < j1; ++j) d[j] = s[(j - j0) * c.sw * sW];
    const int64_t zeros = i + 1 < i1 ? Wq - j1 + j0 : (Hq - i) * Wq - j1;
    for (int64_t k = 0; k < zeros; ++k) d[j1 + k] = 0.0f;
  }
}

// The input as planes: x itself (stride 1, no padding, contiguous) or a copy in a per-thread scratch buffer.
// realign: copy anyway when x's channels do not start on whole vectors (H * W not a multiple of the lanes, e.g.
// 14² and 7²): the copy's planes start on cache lines, so no vector load of a 1x1 conv splits across two lines
// (ResNet-50's 1x1 convs on 14² and 7² ran 10-20% faster, copy included, where each input channel feeds 32+ weights).
Planes make_planes(const at::Tensor& x, const Conv& c, int64_t cin_g, int64_t kh, int64_t kw, bool realign) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  static const bool copy = std::getenv("NPTM_SPARSE_COPY");
  if (!copy && !realign && c.sh == 1 && c.sw == 1 && c.ph == 0 && c.pw == 0 && x.is_contiguous())
    return {x.const_data_ptr<float>(), C * H * W, cin_g * H * W, H * W, W};
  const int64_t Hq = (H + 2 * c.ph + c.sh - 1) / c.sh, Wq = (W + 2 * c.pw + c.sw - 1) / c.sw;
  const int64_t plane = (Hq * Wq + 15) / 16 * 16;  // every plane starts on a cache line
  const int64_t per_channel = c.sh * c.sw * plane, size = N * C * per_channel;
  float* buf = scratch(size);
  std::vector<char> used(c.sh * c.sw, 0);  // phases some tap reads
  for (int64_t ky = 0; ky < kh; ++ky)
    for (int64_t kx = 0; kx < kw; ++kx) used[(ky * c.dh % c.sh) * c.sw + kx * c.dw % c.sw] = 1;
  const float* src = x.const_data_ptr<float>();
  const auto st = x.strides();
  const int64_t grain = std::max<int64_t>(1, kLayoutGrain / per_channel);  // small inputs: no parallel region
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc)
      for (int64_t p = 0; p < c.sh * c.sw; ++p)
        if (used[p])
          fill_plane(buf + nc * per_channel + p * plane, src + (nc / C) * st[0] + (nc % C) * st[1], H, W, st[2], st[3], c, p / c.sw,
                     p % c.sw, Hq, Wq);
  });
  return {buf, C * per_channel, cin_g * per_channel, plane, Wq};
}

// Row (output channel or block) ranges of about equal work (entries + a per-row constant), enough for the threads.
std::vector<int64_t> channel_chunks(const int64_t* row_ptr, int64_t cout, int64_t other_items, int threads) {
  constexpr int64_t kChannelCost = 8;
  const int64_t want = std::clamp<int64_t>((4 * threads + other_items - 1) / other_items, 1, std::max<int64_t>(cout, 1));
  const double per = double(row_ptr[cout] + kChannelCost * cout) / double(want);
  std::vector<int64_t> chunks{0};
  for (int64_t oc = 1; oc < cout; ++oc)
    if (double(row_ptr[oc] + kChannelCost * oc) >= per * double(chunks.size())) chunks.push_back(oc);
  chunks.push_back(cout);
  return chunks;
}

void check_row_ptr(const at::Tensor& row_ptr, int64_t nnz) {
  const int64_t* r = row_ptr.const_data_ptr<int64_t>();
  bool ok = r[0] == 0 && r[row_ptr.numel() - 1] == nnz;
  for (int64_t i = 1; i < row_ptr.numel() && ok; ++i) ok = r[i] >= r[i - 1];
  TORCH_CHECK_VALUE(ok, "sparse_conv2d: row_ptr must rise from 0 to the ", nnz, " stored entries");
}

at::Tensor sparse_conv2d_cpu(const at::Tensor& input, const at::Tensor& values, const at::Tensor& taps_in, const at::Tensor& row_ptr_in,
                             at::IntArrayRef weight_shape, const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             std::optional<double> clamp_min, std::optional<double> clamp_max) {
  const auto s = check_sparse_conv2d(input, values, taps_in, row_ptr_in, weight_shape, bias, residual, stride, padding, dilation, groups);
  auto out = at::empty({s.n, s.cout, s.ho, s.wo}, input.options());
  if (out.numel() == 0) return out;
  const auto vals = values.contiguous(), row_ptr = row_ptr_in.contiguous();
  check_row_ptr(row_ptr, vals.size(0));
  if (vals.numel() == 0) {  // nothing stored: the input is never read (no planes), out = clamp(bias + residual)
    if (bias) out.copy_(bias->view({1, -1, 1, 1}).expand_as(out));
    else out.zero_();
    if (residual) out.add_(*residual);
    if (clamp_min || clamp_max) out.clamp_(clamp_min ? std::optional<at::Scalar>(*clamp_min) : std::nullopt,
                                           clamp_max ? std::optional<at::Scalar>(*clamp_max) : std::nullopt);
    return out;
  }
  const Conv c{stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
  const int64_t per_image = input.size(1) * c.sh * c.sw * ((input.size(2) + 2 * c.ph + c.sh - 1) / c.sh) *
                            ((input.size(3) + 2 * c.pw + c.sw - 1) / c.sw);
  TORCH_CHECK_VALUE(per_image < std::numeric_limits<int32_t>::max(), "sparse_conv2d: one image of ", input.sizes(), " is too large");
  const Isa isa = pick_isa();
  const bool realign = input.size(2) * input.size(3) % lanes_of(isa).lanes != 0 && vals.numel() >= kRealignWeights * input.size(1);
  const auto planes = make_planes(input, c, s.cin_g, s.kh, s.kw, realign);
  const auto offsets = sparse_conv::tap_offsets(taps_in, row_ptr, {s.cin_g, s.kh, s.kw, c.sh, c.sw, c.dh, c.dw, planes.plane, planes.Wq});
  const auto res = residual ? residual->contiguous() : at::Tensor();
  const auto b = bias ? bias->contiguous() : at::Tensor();
  const int64_t P = (s.ho - 1) * planes.Wq + s.wo;
  static const int64_t serial = std::getenv("NPTM_SPARSE_SERIAL") ? std::atoll(std::getenv("NPTM_SPARSE_SERIAL")) : kSerialWork;
  const int threads = s.n * P * (vals.numel() + s.cout) < serial ? 1 : at::get_num_threads();
  const int vectors = tile_vectors(lanes_of(isa), s.cin_g, s.kh, P, s.block), T = vectors * lanes_of(isa).lanes;
  const auto chunks = channel_chunks(row_ptr.const_data_ptr<int64_t>(), s.rows, s.n * ((P + T - 1) / T), threads);
  constexpr float inf = std::numeric_limits<float>::infinity();
  const Job job{planes.data, planes.data + s.n * planes.image, planes.image, planes.group, planes.group / s.cin_g, vals.const_data_ptr<float>(), offsets.const_data_ptr<int32_t>(),
                row_ptr.const_data_ptr<int64_t>(), chunks.data(), int64_t(chunks.size()) - 1,
                b.defined() ? b.const_data_ptr<float>() : nullptr, res.defined() ? res.const_data_ptr<float>() : nullptr,
                out.data_ptr<float>(), clamp_min ? float(*clamp_min) : -inf, clamp_max ? float(*clamp_max) : inf,
                s.n, s.cout, s.cout / groups, s.ho, s.wo, planes.Wq, int(s.block), s.rows / groups, vectors, threads};
  switch (isa) {
    case Isa::avx512: sparse_conv::run_avx512(job); break;
    case Isa::avx2: sparse_conv::run_avx2(job); break;
    default: sparse_conv::run_portable(job);
  }
  return out;
}

}  // namespace

std::string sparse_conv2d_isa() {
  switch (pick_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("sparse_conv2d", TORCH_FN(sparse_conv2d_cpu)); }
}  // namespace nptm::ops

// Global top-k magnitude selection on CPU: OpenMP radix select over all tensors in place (no
// concatenation, no float copies). Passes over the scores: one histogram per key digit (16-bit
// digits: 1 pass for fp16/bf16, <= 2 for fp32, <= 4 for fp64; later passes only count keys sharing
// the resolved prefix, the first also checks NaN and counts the alive), then one fused pass writing
// the masks. Ties at the threshold cost one extra counting pass, only when some but not all of them
// are pruned (it finds the position of the last pruned tie, so the write pass needs no ranks).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <torch/library.h>

#include <climits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../float_keys.h"
#include "../ops.h"

namespace nptm::ops {
namespace {

constexpr int64_t kChunk = int64_t(1) << 15;  // elements per unit of parallel work
constexpr int64_t kParallelGrain = int64_t(1) << 18;

struct Chunk {
  int tensor;
  int64_t begin, end;
};

template <typename U> struct Inputs {
  std::vector<at::Tensor> keep_alive;  // contiguous copies of the rare non-contiguous inputs
  std::vector<const U*> x;
  std::vector<const uint8_t*> mask;
  std::vector<bool*> out;
  std::vector<Chunk> chunks;  // in (tensor, index) order
  int threads = 1;
};

template <typename U> Inputs<U> make_inputs(at::TensorList scores, at::TensorList masks, const std::vector<at::Tensor>& outs) {
  Inputs<U> in;
  for (size_t i = 0; i < scores.size(); ++i) {
    at::Tensor s = scores[i].is_contiguous() ? scores[i] : in.keep_alive.emplace_back(scores[i].contiguous());
    in.x.push_back(static_cast<const U*>(s.const_data_ptr()));
    if (!masks.empty()) {
      at::Tensor m = masks[i].is_contiguous() ? masks[i] : in.keep_alive.emplace_back(masks[i].contiguous());
      in.mask.push_back(static_cast<const uint8_t*>(m.const_data_ptr()));
    }
    in.out.push_back(outs[i].data_ptr<bool>());
    for (int64_t b = 0; b < s.numel(); b += kChunk) in.chunks.push_back({int(i), b, std::min(b + kChunk, s.numel())});
  }
  int64_t total = 0;
  for (const auto& s : scores) total += s.numel();
  // A thread per kParallelGrain elements at most: smaller inputs are not worth waking threads for.
  in.threads = int(std::clamp<int64_t>((total + kParallelGrain - 1) / kParallelGrain, 1, at::get_num_threads()));
  return in;
}

template <typename T, bool ABS, bool MASK> struct Kernels {
  using U = typename FloatBits<T>::U;
  const Inputs<U>& in;

  // hist[d] = #alive keys with key_prefix(key, shift + width) == prefix and digit d at `shift`.
  // Returns the first tensor with an alive NaN (INT_MAX if none) when check_nan.
  int histogram(int shift, int width, uint64_t prefix, bool check_nan, int64_t* hist, std::vector<int64_t>& local) const {
    const int64_t bins = int64_t(1) << width;
    local.resize(size_t(in.threads * bins));
    int nan_tensor = INT_MAX;
    const int64_t nchunks = int64_t(in.chunks.size());
#pragma omp parallel num_threads(in.threads)
    {
      int64_t* h = local.data() + omp_get_thread_num() * bins;
      std::fill(h, h + bins, 0);
      int my_nan = INT_MAX;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const Chunk ch = in.chunks[c];
        const U* x = in.x[ch.tensor];
        const uint8_t* m = MASK ? in.mask[ch.tensor] : nullptr;
        bool nan = false;
        for (int64_t j = ch.begin; j < ch.end; ++j) {
          const bool alive = !MASK || m[j];
          const U bits = x[j];
          nan |= alive & is_nan_bits<T>(bits);
          const U key = score_key<U, ABS>(bits);
          if (alive && key_prefix(key, shift + width) == prefix) ++h[(key >> shift) & (bins - 1)];
        }
        if (check_nan && nan) my_nan = std::min(my_nan, ch.tensor);
      }
      const int team = omp_get_num_threads();
#pragma omp for schedule(static)
      for (int64_t b = 0; b < bins; ++b) {
        int64_t sum = 0;
        for (int t = 0; t < team; ++t) sum += local[t * bins + b];
        hist[b] = sum;
      }
#pragma omp critical
      nan_tensor = std::min(nan_tensor, my_nan);
    }
    return nan_tensor;
  }

  // Whether an entry is alive and its key >> shift equals prefix.
  static bool is_equal(const U* x, const uint8_t* m, int64_t j, int shift, uint64_t prefix) {
    return (!MASK || m[j]) && uint64_t(score_key<U, ABS>(x[j]) >> shift) == prefix;
  }

  // Position (chunk, index) of the r-th alive key (1-based, position order) with key >> shift == prefix.
  std::pair<int64_t, int64_t> find_rth_equal(int shift, uint64_t prefix, int64_t r) const {
    const int64_t nchunks = int64_t(in.chunks.size());
    std::vector<int64_t> counts(nchunks);
#pragma omp parallel for num_threads(in.threads) schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const Chunk ch = in.chunks[c];
      int64_t n = 0;
      for (int64_t j = ch.begin; j < ch.end; ++j) n += is_equal(in.x[ch.tensor], MASK ? in.mask[ch.tensor] : nullptr, j, shift, prefix);
      counts[c] = n;
    }
    int64_t c = 0;
    for (; r > counts[c]; ++c) r -= counts[c];
    const Chunk ch = in.chunks[c];
    int64_t j = ch.begin;
    for (; (r -= is_equal(in.x[ch.tensor], MASK ? in.mask[ch.tensor] : nullptr, j, shift, prefix)) > 0; ++j) {}
    return {c, j};
  }

  // Output masks by rule R. prune_le: prune key >> shift < prefix, and == prefix only up to
  // position (cut_chunk, cut_index) inclusive (cut_chunk == #chunks: all of them).
  template <Rule R> void write(int shift, uint64_t prefix, int64_t cut_chunk, int64_t cut_index) const {
    const int64_t nchunks = int64_t(in.chunks.size());
#pragma omp parallel for num_threads(in.threads) schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const Chunk ch = in.chunks[c];
      const U* x = in.x[ch.tensor];
      const uint8_t* m = MASK ? in.mask[ch.tensor] : nullptr;
      bool* out = in.out[ch.tensor];
      if constexpr (R == Rule::keep_alive) {
        for (int64_t j = ch.begin; j < ch.end; ++j) out[j] = !MASK || m[j];
      } else if constexpr (R == Rule::prune_all) {
        std::fill(out + ch.begin, out + ch.end, false);
      } else {
        const int64_t cut = c < cut_chunk ? ch.end : c > cut_chunk ? ch.begin : cut_index + 1;
        for (int64_t j = ch.begin; j < cut; ++j) out[j] = (!MASK || m[j]) && uint64_t(score_key<U, ABS>(x[j]) >> shift) > prefix;
        for (int64_t j = cut; j < ch.end; ++j) out[j] = (!MASK || m[j]) && uint64_t(score_key<U, ABS>(x[j]) >> shift) >= prefix;
      }
    }
  }

  void run(int64_t k, int64_t total) const {
    const int digit_bits = total < (int64_t(1) << 14) ? 8 : 16;  // small inputs: small histograms
    RadixSelect sel(kKeyBits<U>, digit_bits, k);
    std::vector<int64_t> hist(size_t(1) << digit_bits), local;
    int64_t alive = 0;
    bool first = true;
    while (first || (k > 0 && k < alive && !sel.done())) {
      const int nan_tensor = histogram(sel.digit_shift(), sel.width(), sel.prefix, first, hist.data(), local);
      if (first) {
        TORCH_CHECK_VALUE(nan_tensor == INT_MAX, "global_magnitude_masks: NaN score in tensor ", nan_tensor);
        for (int64_t b = 0; b < (int64_t(1) << sel.width()); ++b) alive += hist[b];
        TORCH_CHECK_VALUE(k <= alive, "global_magnitude_masks: k=", k, " but only ", alive, " entries are alive");
        first = false;
        if (k == 0 || k == alive) break;
      }
      sel.consume(hist.data());
    }
    if (k == 0) return write<Rule::keep_alive>(0, 0, 0, 0);
    if (k == alive) return write<Rule::prune_all>(0, 0, 0, 0);
    if (sel.want == sel.count_eq) return write<Rule::prune_le>(sel.shift, sel.prefix, int64_t(in.chunks.size()), 0);
    // Ties at the threshold: only the first `want` equal keys in position order are pruned.
    const auto [cut_chunk, cut_index] = find_rth_equal(sel.shift, sel.prefix, sel.want);
    write<Rule::prune_le>(sel.shift, sel.prefix, cut_chunk, cut_index);
  }
};

template <typename F> void dispatch_bool(bool b, F&& f) {
  if (b) f(std::true_type{});
  else f(std::false_type{});
}

std::vector<at::Tensor> global_magnitude_masks_cpu(at::TensorList scores, at::TensorList masks, int64_t k, bool use_abs) {
  check_global_magnitude_masks(scores, masks, k);
  std::vector<at::Tensor> outs;
  if (scores.empty()) return outs;
  int64_t total = 0;
  for (const auto& s : scores) {
    outs.push_back(at::empty(s.sizes(), s.options().dtype(at::kBool)));
    total += s.numel();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores[0].scalar_type(), "global_magnitude_masks_cpu", [&] {
    using U = typename FloatBits<scalar_t>::U;
    const auto in = make_inputs<U>(scores, masks, outs);
    dispatch_bool(use_abs, [&](auto abs) {
      dispatch_bool(!masks.empty(), [&](auto has_mask) { Kernels<scalar_t, abs.value, has_mask.value>{in}.run(k, total); });
    });
  });
  return outs;
}

}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("global_magnitude_masks", TORCH_FN(global_magnitude_masks_cpu)); }
}  // namespace nptm::ops

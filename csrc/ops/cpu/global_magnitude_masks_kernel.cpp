// Global top-k magnitude selection on CPU: a sample-based select with one fused pass over the scores
// (topk_sample.h), falling back to an exact radix select (topk_radix.h) when the sample's bounds miss.
// Tensors of different float dtypes may be mixed: values are compared exactly in a common key type.
#include <torch/library.h>

#include <type_traits>

#include "../ops.h"
#include "topk_sample.h"

namespace nptm::ops {
namespace {
using namespace topk_cpu;

template <typename F> void dispatch_bool(bool b, F&& f) {
  if (b) f(std::true_type{});
  else f(std::false_type{});
}

// The key dtype: the common dtype if there is one, else fp64 when present, else fp32 (exact for fp16/bf16).
template <typename F> void dispatch_key(at::TensorList scores, F&& f) {
  bool mixed = false, any_double = false;
  for (const auto& s : scores) {
    mixed |= s.scalar_type() != scores[0].scalar_type();
    any_double |= s.scalar_type() == at::kDouble;
  }
  const auto key = !mixed ? scores[0].scalar_type() : any_double ? at::kDouble : at::kFloat;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, key, "global_magnitude_masks_cpu", [&] { f(Tag<scalar_t>{}); });
}

std::vector<at::Tensor> global_magnitude_masks_cpu(at::TensorList scores, at::TensorList masks, int64_t k, bool use_abs,
                                                   std::optional<double> fraction) {
  const PruneCount count = check_global_magnitude_masks(scores, masks, k, fraction, /*mixed_dtypes=*/true);
  std::vector<at::Tensor> outs;
  if (scores.empty()) return outs;
  for (const auto& s : scores) outs.push_back(at::empty(s.sizes(), s.options().dtype(at::kBool)));
  const Inputs in(scores, masks, outs);
  dispatch_key(scores, [&](auto key) {
    using K = typename decltype(key)::type;
    dispatch_bool(use_abs, [&](auto abs) {
      dispatch_bool(!masks.empty(), [&](auto has_mask) {
        constexpr bool ABS = decltype(abs)::value, MASK = decltype(has_mask)::value;
        if (sample_select_applies(count, in.total()) && SampleSelect<K, ABS, MASK>{in}.run(count)) return;
        Radix<K, ABS, MASK>{in}.run(count);
      });
    });
  });
  return outs;
}

}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("global_magnitude_masks", TORCH_FN(global_magnitude_masks_cpu)); }
}  // namespace nptm::ops

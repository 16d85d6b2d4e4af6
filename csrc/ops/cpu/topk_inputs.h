// Inputs of the CPU global top-k: raw pointers cut into chunks, and the keys read from them. A call
// may mix float dtypes: every score is then compared in a common key type K wide enough to hold each
// value exactly (fp32 for fp16/bf16/fp32 mixes, fp64 when fp64 is present); a single-dtype call uses
// its own dtype as K and converts nothing.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <type_traits>
#include <vector>

#include "../float_keys.h"

namespace nptm::ops::topk_cpu {

constexpr int64_t kChunk = int64_t(1) << 15;  // elements per unit of parallel work (offsets fit in uint32)
constexpr int64_t kParallelGrain = int64_t(1) << 18;

struct Chunk {
  int tensor;
  int64_t begin, end;
};

struct Inputs {
  std::vector<at::Tensor> keep_alive;  // contiguous copies of the rare non-contiguous inputs
  std::vector<const void*> x;
  std::vector<at::ScalarType> dtype;
  std::vector<const uint8_t*> mask;
  std::vector<bool*> out;
  std::vector<int64_t> start;  // start[i] = flat position of tensor i in the concatenation; start.back() = N
  std::vector<Chunk> chunks;   // in (tensor, index) order
  int threads = 1;

  Inputs(at::TensorList scores, at::TensorList masks, const std::vector<at::Tensor>& outs) {
    start.push_back(0);
    for (size_t i = 0; i < scores.size(); ++i) {
      at::Tensor s = scores[i].is_contiguous() ? scores[i] : keep_alive.emplace_back(scores[i].contiguous());
      x.push_back(s.const_data_ptr());
      dtype.push_back(s.scalar_type());
      if (!masks.empty()) {
        at::Tensor m = masks[i].is_contiguous() ? masks[i] : keep_alive.emplace_back(masks[i].contiguous());
        mask.push_back(static_cast<const uint8_t*>(m.const_data_ptr()));
      }
      out.push_back(outs[i].data_ptr<bool>());
      for (int64_t b = 0; b < s.numel(); b += kChunk) chunks.push_back({int(i), b, std::min(b + kChunk, s.numel())});
      start.push_back(start.back() + s.numel());
    }
    // A thread per kParallelGrain elements at most: smaller inputs are not worth waking threads for.
    threads = int(std::clamp<int64_t>((start.back() + kParallelGrain - 1) / kParallelGrain, 1, at::get_num_threads()));
  }
  int64_t total() const { return start.back(); }
};

template <typename T> struct Tag { using type = T; };

// Calls f(Tag<T>{}) with the source dtype T of a tensor; T is K or a dtype K holds exactly.
template <typename K, typename F> void visit_source(at::ScalarType st, F&& f) {
  constexpr bool wide = sizeof(K) >= 4;
  if constexpr (std::is_same_v<K, double>)
    if (st == at::kDouble) return f(Tag<double>{});
  if constexpr (wide)
    if (st == at::kFloat) return f(Tag<float>{});
  if constexpr (wide || std::is_same_v<K, c10::BFloat16>)
    if (st == at::kBFloat16) return f(Tag<c10::BFloat16>{});
  if constexpr (wide || std::is_same_v<K, c10::Half>)
    if (st == at::kHalf) return f(Tag<c10::Half>{});
}

// Bits of the K value equal to the T value with bits b (exact: K holds every T value, NaN stays NaN).
template <typename K, typename T> inline typename FloatBits<K>::U to_key_bits(typename FloatBits<T>::U b) {
  if constexpr (std::is_same_v<K, T>) {
    return b;
  } else {
    float f;
    if constexpr (std::is_same_v<T, float>) f = std::bit_cast<float>(b);
    else if constexpr (std::is_same_v<T, c10::BFloat16>) f = std::bit_cast<float>(uint32_t(b) << 16);
    else f = float(c10::Half(b, c10::Half::from_bits()));
    if constexpr (std::is_same_v<K, float>) return std::bit_cast<uint32_t>(f);
    else return std::bit_cast<uint64_t>(double(f));
  }
}

// Typed view of one tensor's scores for source dtype T and key dtype K.
template <typename K, typename T, bool ABS> struct Source {
  using U = typename FloatBits<K>::U;
  const typename FloatBits<T>::U* x;
  explicit Source(const void* p) : x(static_cast<const typename FloatBits<T>::U*>(p)) {}
  U bits(int64_t j) const { return to_key_bits<K, T>(x[j]); }
  U key(int64_t j) const { return score_key<U, ABS>(bits(j)); }
};

}  // namespace nptm::ops::topk_cpu

// sparse_conv2d's tap offsets and their cache (sparse_conv_offsets.h).
#include "sparse_conv_offsets.h"

#include <ATen/Parallel.h>

#include <array>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nptm::ops::sparse_conv {
namespace {

// Whether every row's input channels never decrease (compress_weight writes each row's taps in increasing order).
bool channels_rise(const at::Tensor& taps, const at::Tensor& row_ptr, int64_t per_channel) {
  const int32_t* t = taps.const_data_ptr<int32_t>();
  const int64_t* r = row_ptr.const_data_ptr<int64_t>();
  for (int64_t row = 0; row + 1 < row_ptr.numel(); ++row)
    for (int64_t j = r[row] + 1; j < r[row + 1]; ++j)
      if (t[j] / per_channel < t[j - 1] / per_channel) return false;
  return true;
}

at::Tensor compute(const at::Tensor& taps, const at::Tensor& row_ptr, const Geometry& g) {
  std::vector<int32_t> table(g.cin_g * g.kh * g.kw);
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t a = ky * g.dh % g.sh, b = kx * g.dw % g.sw, within = (ky * g.dh / g.sh) * g.Wq + kx * g.dw / g.sw;
      for (int64_t ic = 0; ic < g.cin_g; ++ic)
        table[(ic * g.kh + ky) * g.kw + kx] = int32_t(((ic * g.sh + a) * g.sw + b) * g.plane + within);
    }
  auto out = at::empty_like(taps, at::MemoryFormat::Contiguous);
  const int32_t* t = taps.const_data_ptr<int32_t>();
  int32_t* o = out.data_ptr<int32_t>();
  const auto n = static_cast<uint32_t>(table.size());
  std::atomic<bool> bad{false};
  at::parallel_for(0, taps.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    bool oob = false;
    for (int64_t j = begin; j < end; ++j) {
      const auto k = static_cast<uint32_t>(t[j]);
      oob |= k >= n;
      o[j] = table[k < n ? k : 0];
    }
    if (oob) bad = true;
  });
  TORCH_CHECK_INDEX(!bad, "sparse_conv2d: a tap is outside [0, ", n, ") (in/groups x kh x kw)");
  TORCH_CHECK_VALUE(channels_rise(taps, row_ptr, g.kh * g.kw), "sparse_conv2d: the taps of a row must not go back to an "
                    "earlier input channel (as compress_weight writes them)");
  return out;
}

using Key = std::array<int64_t, 16>;

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 0;
    for (int64_t v : k) h = h * 0x9E3779B97F4A7C15ull + std::hash<int64_t>()(v);
    return h;
  }
};

struct Entry {
  // keep the StorageImpls' addresses from being reused while cached
  c10::weak_intrusive_ptr<c10::StorageImpl> storage, row_storage;
  at::Tensor offsets;
};

// A miss drops the entries of freed taps and of older versions of the same taps, and everything once the cache
// would hold more than kMaxOffsets offsets (64 MiB: e.g. a model called at ever new input sizes).
constexpr int64_t kMaxOffsets = int64_t(16) << 20;
std::mutex mutex;
int64_t held = 0;  // offsets in the cache
// Never destroyed: tensors freed after torch's own statics at exit would crash.
auto& cache = *new std::unordered_map<Key, Entry, KeyHash>();

}  // namespace

at::Tensor tap_offsets(const at::Tensor& taps, const at::Tensor& row_ptr, const Geometry& g) {
  if (!taps.is_contiguous() || taps.is_inference() || taps.numel() == 0 || !row_ptr.is_contiguous() || row_ptr.is_inference())
    return compute(taps.contiguous(), row_ptr.contiguous(), g);
  const Key key{int64_t(reinterpret_cast<intptr_t>(taps.storage().unsafeGetStorageImpl())),
                int64_t(reinterpret_cast<intptr_t>(taps.const_data_ptr())), taps.numel(), int64_t(taps._version()),
                int64_t(reinterpret_cast<intptr_t>(row_ptr.const_data_ptr())), row_ptr.numel(), int64_t(row_ptr._version()),
                g.cin_g, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.plane, g.Wq};
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      if (!it->second.storage.expired() && !it->second.row_storage.expired()) return it->second.offsets;
      held -= it->second.offsets.numel();
      cache.erase(it);
    }
  }
  auto offsets = compute(taps, row_ptr, g);
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = cache.begin(); it != cache.end();) {
    const bool stale = it->second.storage.expired() || it->second.row_storage.expired() ||
                       (it->first[0] == key[0] && it->first[3] != key[3]);
    held -= stale ? it->second.offsets.numel() : 0;
    it = stale ? cache.erase(it) : std::next(it);
  }
  if (held + offsets.numel() > kMaxOffsets) {
    cache.clear();
    held = 0;
  }
  const bool added = cache.insert_or_assign(key, Entry{taps.storage().getWeakStorageImpl(), row_ptr.storage().getWeakStorageImpl(), offsets}).second;
  held += added ? offsets.numel() : 0;
  return offsets;
}

}  // namespace nptm::ops::sparse_conv

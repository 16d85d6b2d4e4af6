// Order statistics of keys in [base, base + span] without sorting them: one histogram of the top 16
// bits of key - base, then nth_element inside the one bucket holding the rank. Used by the sample
// select on its sample and its candidates, where a plain nth_element cost more than the fused pass.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <utility>
#include <vector>

namespace nptm::ops::topk_cpu {

template <typename U> class BucketSelect {
 public:
  BucketSelect(U base, U span)
      : base_(base), shift_(std::max(0, int(std::bit_width(uint64_t(span))) - 16)), hist_(size_t(uint64_t(span) >> shift_) + 1) {}

  void add(U key) { ++hist_[bucket(key)]; }

  // The rank-th smallest (0-based) of the added keys and how many added keys are smaller.
  // each(take) must call take(key) again for every added key.
  template <typename Each> std::pair<U, int64_t> select(int64_t rank, Each&& each) const {
    int64_t before = 0;
    size_t b = 0;
    for (; before + hist_[b] <= rank; ++b) before += hist_[b];
    std::vector<U> in;
    in.reserve(size_t(hist_[b]));
    each([&](U key) {
      if (bucket(key) == b) in.push_back(key);
    });
    std::nth_element(in.begin(), in.begin() + (rank - before), in.end());
    const U v = in[size_t(rank - before)];
    return {v, before + std::count_if(in.begin(), in.begin() + (rank - before), [&](U x) { return x < v; })};
  }

 private:
  size_t bucket(U key) const { return size_t(uint64_t(U(key - base_)) >> shift_); }
  U base_;
  int shift_;
  std::vector<int64_t> hist_;
};

}  // namespace nptm::ops::topk_cpu

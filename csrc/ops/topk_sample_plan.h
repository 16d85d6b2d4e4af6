// The sample select's plan, shared by the CPU (cpu/topk_sample.h) and CUDA (cuda/topk_sample_kernels.cuh)
// kernels: which inputs try it, how many positions it reads (float_keys.h: sample_position), and which
// ranks of the alive sample keys bound the k-th key.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "float_keys.h"

namespace nptm::ops {

constexpr int kSampleBits = 17;  // 2^17 sample positions, or every position of a smaller input
constexpr int64_t kSampleSize = int64_t(1) << kSampleBits;
constexpr double kSampleZ = 4.0;          // bounds at +- this many standard deviations of the sample rank
constexpr int64_t kMinSampled = 1 << 14;  // smaller inputs go straight to the radix select

// Whether N entries try the sample select: something to prune, and N in sample_position's range.
inline bool sample_select_applies(PruneCount count, int64_t N) {
  return (count.known() ? count.k > 0 : count.fraction > 0) && N >= kMinSampled && N < (int64_t(1) << (63 - kSampleBits));
}

struct SampleRanks {
  int64_t lo, hi;   // ranks among the A alive sample keys: lo < 0 no lower bound, hi >= A no upper bound
  double expected;  // the entries expected between the two bounds
};

// The k-th alive key's rank among the A alive keys of S sample positions (of N) is k/N of S, or the
// fraction of A; the bounds lie kSampleZ standard deviations (+2) either side.
inline SampleRanks sample_ranks(PruneCount count, int64_t N, int64_t S, int64_t A) {
  const double pool = double(count.known() ? S : A), p = count.known() ? double(count.k) / double(N) : count.fraction;
  const double r = p * pool, delta = kSampleZ * std::sqrt(pool * p * (1 - p)) + 2;
  const int64_t lo = int64_t(std::floor(r - delta)), hi = int64_t(std::ceil(r + delta));
  const double between = std::max<double>(double(std::min<int64_t>(hi, A - 1) - std::max<int64_t>(lo, 0) + 1), 0);
  return {lo, hi, between * double(N) / double(S)};
}

}  // namespace nptm::ops

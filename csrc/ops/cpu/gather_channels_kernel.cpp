// gather_channels on CPU: each contiguous tensor is viewed as [outer, C, inner]; one OpenMP loop over
// blocks of (tensor, outer, kept-channel) rows copies the inner blocks of every tensor.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../ops.h"

namespace nptm::ops {
namespace {

constexpr int64_t kItemBytes = 1 << 16;  // bytes copied per work item (at least one row)

struct Job {
  const char* in;
  char* out;
  const int64_t* idx;  // K channels of C
  int64_t C, K, row_bytes;  // row = one inner block
};

struct Item {
  const Job* job;
  int64_t begin, end;  // output rows r = o * K + k
};

// kBytes > 0: rows of that compile-time size (memcpy becomes one move); 0: job.row_bytes.
template <int64_t kBytes>
void copy_rows(const Job& j, int64_t begin, int64_t end) {
  const int64_t B = kBytes ? kBytes : j.row_bytes;
  int64_t o = begin / j.K, k = begin % j.K;
  for (int64_t r = begin; r < end; ++r) {
    std::memcpy(j.out + r * B, j.in + (o * j.C + j.idx[k]) * B, B);
    if (++k == j.K) k = 0, ++o;
  }
}

void copy_item(const Item& it) {
  switch (it.job->row_bytes) {
    case 1: return copy_rows<1>(*it.job, it.begin, it.end);
    case 2: return copy_rows<2>(*it.job, it.begin, it.end);
    case 4: return copy_rows<4>(*it.job, it.begin, it.end);
    case 8: return copy_rows<8>(*it.job, it.begin, it.end);
    case 16: return copy_rows<16>(*it.job, it.begin, it.end);
    default: return copy_rows<0>(*it.job, it.begin, it.end);
  }
}

void check_bounds(const at::Tensor& idx, int64_t C, size_t tensor, int64_t dim) {
  const int64_t* p = idx.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < idx.numel(); ++k)
    TORCH_CHECK_INDEX(p[k] >= 0 && p[k] < C, "gather_channels: index ", p[k], " is out of range for tensor ", tensor, " with size ", C, " along dim ", dim);
}

std::vector<at::Tensor> gather_channels_cpu(at::TensorList tensors, at::IntArrayRef dims, at::TensorList indices, bool /*synchronous_check*/) {
  const auto d = check_gather_channels(tensors, dims, indices);
  const size_t n = tensors.size();
  std::vector<at::Tensor> idx(n), out(n);
  for (size_t i = 0; i < n; ++i) {
    idx[i] = indices[i].to(at::kLong).contiguous();
    check_bounds(idx[i], tensors[i].size(d[i]), i, d[i]);
  }
  std::vector<Job> jobs;
  jobs.reserve(n);  // Items point into jobs
  std::vector<Item> items;
  for (size_t i = 0; i < n; ++i) {
    const auto& t = tensors[i];
    if (!t.is_contiguous() || t.is_conj() || t.is_neg()) {
      out[i] = t.index_select(d[i], indices[i]).contiguous();
      continue;
    }
    auto sizes = t.sizes().vec();
    const int64_t outer = c10::multiply_integers(sizes.begin(), sizes.begin() + d[i]);
    const int64_t inner = c10::multiply_integers(sizes.begin() + d[i] + 1, sizes.end());
    sizes[d[i]] = idx[i].numel();
    out[i] = at::empty(sizes, t.options());
    const int64_t rows = outer * idx[i].numel(), row_bytes = inner * t.element_size();
    if (rows == 0 || row_bytes == 0) continue;
    jobs.push_back({static_cast<const char*>(t.const_data_ptr()), static_cast<char*>(out[i].data_ptr()),
                    idx[i].const_data_ptr<int64_t>(), t.size(d[i]), idx[i].numel(), row_bytes});
    const int64_t step = std::max<int64_t>(1, kItemBytes / row_bytes);
    for (int64_t b = 0; b < rows; b += step) items.push_back({&jobs.back(), b, std::min(rows, b + step)});
  }
  const auto n_items = static_cast<int64_t>(items.size());
#pragma omp parallel for schedule(dynamic) num_threads(at::get_num_threads()) if (n_items > 1)
  for (int64_t c = 0; c < n_items; ++c) copy_item(items[c]);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nptm, CPU, m) { m.impl("gather_channels", TORCH_FN(gather_channels_cpu)); }
}  // namespace nptm::ops

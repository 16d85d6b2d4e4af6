// A per-thread buffer kept between an op's calls (the caller's thread owns it), zeroed when (re)allocated.
#pragma once
#include <ATen/ATen.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

namespace nptm::ops {

struct ScratchBuffer {
  float* data = nullptr;
  int64_t size = 0;  // floats
  ~ScratchBuffer() { std::free(data); }

  // At least n floats, `align`-byte aligned (a power of two; the size is rounded up to it); huge: ask the kernel
  // for huge pages. What is for: named in the error when the allocation fails.
  float* get(int64_t n, size_t align, bool huge, const char* op, const char* what) {
    if (size >= n) return data;
    std::free(data);
    data = nullptr;
    size = 0;
    const size_t bytes = (size_t(n) * sizeof(float) + align - 1) / align * align;
    data = static_cast<float*>(std::aligned_alloc(align, bytes));
    TORCH_CHECK(data, op, ": cannot allocate ", bytes, " bytes for ", what);
    if (huge) madvise(data, bytes, MADV_HUGEPAGE);
    std::memset(data, 0, bytes);
    size = int64_t(bytes / sizeof(float));
    return data;
  }
};

}  // namespace nptm::ops

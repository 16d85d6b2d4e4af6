// What the kernels (cuda/*_kernels.cuh) and their host side are written against. Under nvcc: CUDA,
// CUB and the GPU backend, in namespace nptm::ops::gpu. With NPTM_EMULATE (a plain C++ compiler):
// the CPU emulator of emu/emulator.h and its backend, in namespace nptm::ops::emu. The same source
// thus compiles to both, and the two never share a symbol.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <vector>

#ifdef NPTM_EMULATE
#include "../emu/emulator.h"
#define NPTM_KERNEL_NS emu
#define NPTM_GLOBAL
#define NPTM_DEVICE inline
#define NPTM_SHARED static  // blocks run one at a time: a function static is the block's shared memory
#define NPTM_DYNAMIC_SHARED(T, name) T* name = ::nptm::ops::emu::dynamic_shared<T>()
#define NPTM_DEVICE_ASSERT(cond) ::nptm::ops::emu::device_assert(cond, #cond)

namespace nptm::ops::emu {
struct Backend {
  static constexpr int kThreads = 8;  // small blocks keep emulated tests fast; kernels take it as a parameter
  struct Guard {
    explicit Guard(c10::Device) {}
  };
  static inline thread_local bool pretend_capturing = false;  // tests drive the graph-capture checks with it
  static bool capturing() { return pretend_capturing; }
  static int multiprocessors() { return 2; }
  static at::Tensor upload(const std::vector<uint8_t>& bytes, c10::Device, bool /*blocking*/) {
    auto t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
    return t;
  }
  template <typename... P, typename... A>
  static void launch(void (*kernel)(P...), unsigned grid, unsigned threads, size_t shared_bytes, A&&... args) {
    emu::launch(kernel, grid, threads, shared_bytes, std::forward<A>(args)...);
  }
};
}  // namespace nptm::ops::emu

#else
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#define NPTM_KERNEL_NS gpu
#define NPTM_GLOBAL __global__
#define NPTM_DEVICE __device__ __forceinline__
#define NPTM_SHARED __shared__
#define NPTM_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define NPTM_DEVICE_ASSERT(cond) CUDA_KERNEL_ASSERT(cond)

namespace nptm::ops::gpu {
template <typename T, int Threads> using BlockScan = cub::BlockScan<T, Threads>;
template <typename T, int Threads> using BlockReduce = cub::BlockReduce<T, Threads>;

struct Backend {
  static constexpr int kThreads = 256;
  using Guard = c10::cuda::CUDAGuard;
  static bool capturing() { return at::cuda::currentStreamCaptureStatus() != at::cuda::CaptureStatus::None; }
  static int multiprocessors() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }
  // Through pinned memory on the current stream; the pinned block stays reserved until the copy ends.
  static at::Tensor upload(const std::vector<uint8_t>& bytes, c10::Device device, bool blocking) {
    auto host = at::empty({static_cast<int64_t>(bytes.size())}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    if (!bytes.empty()) std::memcpy(host.data_ptr(), bytes.data(), bytes.size());
    return host.to(device, /*non_blocking=*/!blocking);
  }
  template <typename... P, typename... A>
  static void launch(void (*kernel)(P...), unsigned grid, unsigned threads, size_t shared_bytes, A&&... args) {
    if (grid == 0) return;
    kernel<<<grid, threads, shared_bytes, at::cuda::getCurrentCUDAStream()>>>(std::forward<A>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};
}  // namespace nptm::ops::gpu
#endif

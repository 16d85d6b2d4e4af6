// Runs the CUDA kernels of csrc/ops/cuda on the CPU, so tests execute their code without a GPU.
// A launch runs its blocks one after another, last to first (nothing may rely on block order), each
// as blockDim real threads: threadIdx & co. are thread-locals, __syncthreads() is a std::barrier over
// the block's threads (a returned thread drops out of it, as on the GPU), atomics go through
// std::atomic_ref, and the CUB block primitives the kernels use are rebuilt on shared memory.
// Reported as errors instead of computed silently: a CUB TempStorage reused without a __syncthreads
// in between, a failed device assert, a blockDim that differs from the kernel's compile-time block size.
#pragma once
#include <c10/util/Exception.h>

#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

namespace nptm::ops::emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local Dim3 threadIdx, blockIdx, blockDim, gridDim;

struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

namespace detail {
inline std::atomic<uint64_t> sync_generation{0};  // completed __syncthreads, all blocks and launches

struct CountSync {
  void operator()() noexcept { sync_generation.fetch_add(1); }
};

struct Block {
  std::optional<std::barrier<CountSync>> sync;
  std::vector<std::max_align_t> dynamic_shared;
};
inline thread_local Block* block = nullptr;

inline std::mutex& error_mutex() {
  static std::mutex m;
  return m;
}
inline std::string& first_error() {
  static std::string e;
  return e;
}
inline void fail(const std::string& what) {
  const std::lock_guard lock(error_mutex());
  if (first_error().empty()) first_error() = what;
}

// A TempStorage may be written again only after a __syncthreads that follows every read of it.
inline void check_reuse(const std::atomic<uint64_t>& read_at, const char* what) {
  if (read_at.load() == sync_generation.load())
    fail(std::string(what) + "::TempStorage reused without a __syncthreads after its last use");
}

template <int Threads>
void check_block_size(const char* what) {
  if (blockDim.x != unsigned(Threads))
    fail(std::string(what) + " of " + std::to_string(Threads) + " threads used in a block of " + std::to_string(blockDim.x));
}
}  // namespace detail

inline void __syncthreads() { detail::block->sync->arrive_and_wait(); }

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(detail::block->dynamic_shared.data());
}

inline void device_assert(bool ok, const char* what) {
  if (!ok) detail::fail(std::string("device assert failed: ") + what);
}

template <typename T>
T atomicAdd(T* p, std::type_identity_t<T> v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
// Stores v where better(v, *p), atomically; returns the old value (CUDA's atomicMax / atomicMin).
template <typename T, typename Better>
T atomic_improve(T* p, T v, Better better) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (better(v, old) && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <typename T>
T atomicMax(T* p, std::type_identity_t<T> v) {
  return atomic_improve(p, v, [](T x, T y) { return x > y; });
}
template <typename T>
T atomicMin(T* p, std::type_identity_t<T> v) {
  return atomic_improve(p, v, [](T x, T y) { return x < y; });
}

// What cub::BlockScan and cub::BlockReduce share: a TempStorage the block's threads exchange inputs in.
template <typename T, int Threads>
class BlockCollective {
 public:
  struct TempStorage {
    T v[Threads];
    std::atomic<uint64_t> read_at{~uint64_t(0)};
  };
  explicit BlockCollective(TempStorage& s) : s_(s) {}

 protected:
  // Publishes this thread's input; returns every thread's input once the whole block has published.
  const T* exchange(T input, const char* what) {
    detail::check_block_size<Threads>(what);
    detail::check_reuse(s_.read_at, what);
    s_.v[threadIdx.x] = input;
    __syncthreads();
    return s_.v;
  }
  void done_reading() { s_.read_at = detail::sync_generation.load(); }

 private:
  TempStorage& s_;
};

// cub::BlockScan<T, Threads>::ExclusiveSum(input, output, block_aggregate).
template <typename T, int Threads>
class BlockScan : public BlockCollective<T, Threads> {
 public:
  using BlockCollective<T, Threads>::BlockCollective;
  void ExclusiveSum(T input, T& output, T& aggregate) {
    const T* v = this->exchange(input, "BlockScan");
    output = T(), aggregate = T();
    for (unsigned i = 0; i < blockDim.x; ++i) {
      if (i == threadIdx.x) output = aggregate;
      aggregate += v[i];
    }
    this->done_reading();
  }
};

// cub::BlockReduce<T, Threads>::Sum(input): the block's sum, valid in thread 0 only (as in CUB).
template <typename T, int Threads>
class BlockReduce : public BlockCollective<T, Threads> {
 public:
  using BlockCollective<T, Threads>::BlockCollective;
  T Sum(T input) {
    const T* v = this->exchange(input, "BlockReduce");
    T total = input;
    if (threadIdx.x == 0)
      for (unsigned i = 1; i < blockDim.x; ++i) total += v[i];
    this->done_reading();
    return total;
  }
};

// kernel<<<grid, threads, shared_bytes>>>(args...), synchronously. Launches are serialized: a
// kernel's static __shared__ variables are function statics, owned by the one block running.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned threads, size_t shared_bytes, A&&... args) {
  static std::mutex serial;
  const std::lock_guard lock(serial);
  if (grid == 0) return;
  detail::first_error().clear();
  detail::Block block;
  block.dynamic_shared.resize((shared_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t));
  auto next_block = [&block, threads]() noexcept { block.sync.emplace(threads); };
  std::barrier gate(threads, next_block);  // every thread done with one block before the next starts
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  {
    std::vector<std::jthread> workers;
    for (unsigned t = 0; t < threads; ++t)
      workers.emplace_back([&, t] {
        threadIdx = {t, 0, 0}, blockDim = {threads, 1, 1}, gridDim = {grid, 1, 1};
        detail::block = &block;
        for (unsigned b = 0; b < grid; ++b) {
          gate.arrive_and_wait();
          blockIdx = {grid - 1 - b, 0, 0};
          try {
            std::apply(kernel, params);
          } catch (const std::exception& e) {
            detail::fail(e.what());
          }
          block.sync->arrive_and_drop();
        }
      });
  }
  TORCH_CHECK(detail::first_error().empty(), "emulated CUDA kernel: ", detail::first_error());
}

}  // namespace nptm::ops::emu

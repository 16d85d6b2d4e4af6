// Multi-tensor launches: work descriptors are built on the host, packed into one buffer and copied
// to the device (Backend::upload); a kernel then reads its block's entry. No per-launch capacity
// limit (unlike kernel-argument tables), one copy per call.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace nptm::ops {

// Fixed-size, aligned array: loads and stores of a whole one are single vector instructions.
template <typename T, int N, int Align = sizeof(T) * N>
struct alignas(Align) Array {
  T v[N];
};

class DeviceTables {
 public:
  // Appends rows (16-byte aligned); returns their byte offset in the table.
  template <typename T>
  size_t add(const std::vector<T>& rows) {
    static_assert(std::is_trivially_copyable_v<T>, "table rows are copied bytewise");
    const size_t off = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(off + rows.size() * sizeof(T));
    if (!rows.empty()) std::memcpy(bytes_.data() + off, rows.data(), rows.size() * sizeof(T));
    return off;
  }

  template <class Backend>
  void upload(c10::Device device, bool blocking = false) {
    device_ = Backend::upload(bytes_, device, blocking);
  }

  template <typename T>
  T* get(size_t off) const {
    return reinterpret_cast<T*>(static_cast<uint8_t*>(device_.data_ptr()) + off);
  }

  const at::Tensor& device_bytes() const { return device_; }

 private:
  std::vector<uint8_t> bytes_;
  at::Tensor device_;
};

}  // namespace nptm::ops

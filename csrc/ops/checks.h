// Argument checks shared by every op and backend.
#pragma once
#include <ATen/ATen.h>

namespace nptm::ops {

// All tensors on one device; returns it.
inline c10::Device common_device(at::TensorList a, at::TensorList b, const char* op) {
  TORCH_CHECK_VALUE(!a.empty(), op, ": empty tensor list");
  const auto dev = a[0].device();
  for (size_t i = 0; i < a.size(); ++i)
    TORCH_CHECK_VALUE(a[i].device() == dev, op, ": tensor ", i, " is on ", a[i].device(), " but tensor 0 is on ", dev);
  for (size_t i = 0; i < b.size(); ++i)
    TORCH_CHECK_VALUE(b[i].device() == dev, op, ": mask/index ", i, " is on ", b[i].device(), " but tensor 0 is on ", dev);
  return dev;
}

inline bool is_mask_dtype(at::ScalarType t) { return t == at::kBool || t == at::kByte; }

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

}  // namespace nptm::ops

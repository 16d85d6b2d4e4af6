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

// A 2-value int list (stride, padding, dilation) whose values are >= min.
inline void check_pair(const char* op, at::IntArrayRef v, const char* name, int64_t min) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must have 2 values, got ", v.size());
  TORCH_CHECK_VALUE(v[0] >= min && v[1] >= min, op, ": ", name, " must be >= ", min, ", got ", v);
}

// A conv's stride and dilation (>= 1) and zero padding (>= 0), two values each.
inline void check_conv_pairs(const char* op, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_pair(op, stride, "stride", 1);
  check_pair(op, padding, "padding", 0);
  check_pair(op, dilation, "dilation", 1);
}

// A float32 tensor on the CPU (the ops that run on the CPU only).
inline void check_float_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " is on ", t.device(), "; the op runs on CPU only");
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
}

inline bool is_mask_dtype(at::ScalarType t) { return t == at::kBool || t == at::kByte; }

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

}  // namespace nptm::ops

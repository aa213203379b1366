// What the host glue of every op family shares, on CPU and CUDA alike: argument checks (the
// Python API checks arguments first with friendlier messages; these guard direct calls of
// torch.ops.fastact.*), the compute dtype, and the CPU's device guard.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <initializer_list>

namespace fastact {

inline bool is_supported_float(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::Float || dtype == c10::ScalarType::Double ||
         dtype == c10::ScalarType::Half || dtype == c10::ScalarType::BFloat16;
}

inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(is_supported_float(t.scalar_type()), "fastact.", op, ": ", name,
                   " must be a float16, bfloat16, float32 or float64 tensor, got ",
                   t.scalar_type());
}

// `t` must have `like`'s dtype, device and shape (a gradient and its forward input).
inline void check_matches(const char* op, const char* name, const at::Tensor& t,
                          const char* like_name, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device() == like.device() &&
                  t.sizes() == like.sizes(),
              "fastact.", op, ": ", name, " (", t.scalar_type(), ", ", t.device(), ", ",
              t.sizes(), ") must match ", like_name, " (", like.scalar_type(), ", ",
              like.device(), ", ", like.sizes(), ")");
}

// The dtype the kernels compute and keep partial sums in: double for double, float otherwise
// (at::opmath_type of the CUDA kernels, Storage<S>::acc_t of the CPU kernels).
inline c10::ScalarType compute_dtype(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::Double ? c10::ScalarType::Double : c10::ScalarType::Float;
}

// Whether `out` is dense and every input has its strides: then all are flat memory in one
// order, and an elementwise map runs over them as 1-D arrays (CPU and CUDA).
inline bool shares_dense_layout(const at::Tensor& out, std::initializer_list<at::Tensor> in) {
  if (!out.is_non_overlapping_and_dense()) return false;
  for (const at::Tensor& t : in) {
    if (t.strides() != out.strides()) return false;
  }
  return true;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The CPU kernels' DeviceGuard (the families' host headers open one per op): nothing to set.
struct NoDeviceGuard {
  explicit NoDeviceGuard(c10::Device) {}
};

}  // namespace fastact

// Argument checks shared by the CPU and CUDA glue. The Python API checks arguments first
// with friendlier messages; these guard direct calls of torch.ops.fastact.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

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

}  // namespace fastact

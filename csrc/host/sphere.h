// The hyperspherical maps (fastact/sphere.h): what the CPU and CUDA glue share on the host
// side. The argument checks, the shapes and allocations, and the four ops composed once for
// every device from a device's `Kernels` (csrc/cpu/sphere.cpp, csrc/cuda/sphere.cu), which
// provides, for `rows` rows of n coordinates (n - 1 angles) of contiguous tensors:
//
//   using DeviceGuard = ...;   // set for the input's device around the whole op
//   static void spherical_to_cartesian(const at::Tensor& theta, const at::Tensor& u,
//                                      int64_t rows, int64_t n)
//   static void spherical_to_cartesian_backward(const at::Tensor& grad_u,
//                                               const at::Tensor& theta,
//                                               const at::Tensor& grad_theta, int64_t rows,
//                                               int64_t n)
//   static void cartesian_to_spherical(const at::Tensor& w, const at::Tensor& radius,
//                                      const at::Tensor& theta, int64_t rows, int64_t n)
//   static void cartesian_to_spherical_backward(const at::Tensor& grad_radius,
//                                               const at::Tensor& grad_theta,
//                                               const at::Tensor& w, const at::Tensor& grad_w,
//                                               int64_t rows, int64_t n)
//       grad_radius and grad_theta undefined where absent (zero)
//
// each writing its last tensor argument(s), called only with rows > 0 (and n > 1 for the
// spherical backward: there are no angles otherwise).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "host/common.h"

namespace fastact {

// theta [..., n - 1] -> the shape of u, [..., n].
inline std::vector<int64_t> cartesian_shape(const char* op, const at::Tensor& theta) {
  check_float_tensor(op, "theta", theta);
  TORCH_CHECK(theta.dim() >= 1, "fastact.", op,
              ": theta must have at least one dimension (the angles), got a 0-d tensor");
  std::vector<int64_t> shape = theta.sizes().vec();
  ++shape.back();
  return shape;
}

// w [..., n] -> the shape of theta, [..., n - 1].
inline std::vector<int64_t> angles_shape(const char* op, const at::Tensor& w) {
  check_float_tensor(op, "w", w);
  TORCH_CHECK(w.dim() >= 1 && w.size(-1) >= 2, "fastact.", op,
              ": w must have at least 2 coordinates in its last dimension, got shape ", w.sizes());
  std::vector<int64_t> shape = w.sizes().vec();
  --shape.back();
  return shape;
}

// A gradient of `like`'s dtype and device with the given shape, contiguous (undefined when
// absent).
inline at::Tensor checked_gradient(const char* op, const char* name,
                                   const std::optional<at::Tensor>& grad, const at::Tensor& like,
                                   at::IntArrayRef shape) {
  if (!grad.has_value()) return {};
  TORCH_CHECK(grad->scalar_type() == like.scalar_type() && grad->device() == like.device() &&
                  grad->sizes() == shape,
              "fastact.", op, ": ", name, " must be a ", like.scalar_type(), " tensor of shape ",
              shape, ", got ", grad->scalar_type(), " ", grad->sizes());
  return grad->contiguous();
}

template <typename Kernels>
at::Tensor spherical_to_cartesian(const at::Tensor& theta) {
  const std::vector<int64_t> shape = cartesian_shape("spherical_to_cartesian", theta);
  const typename Kernels::DeviceGuard guard(theta.device());
  at::Tensor u = at::empty(shape, theta.options());
  const int64_t n = shape.back();
  const int64_t rows = u.numel() / n;
  if (rows > 0) Kernels::spherical_to_cartesian(theta.contiguous(), u, rows, n);
  return u;
}

template <typename Kernels>
at::Tensor spherical_to_cartesian_backward(const at::Tensor& grad_u, const at::Tensor& theta) {
  const char* op = "spherical_to_cartesian_backward";
  const std::vector<int64_t> shape = cartesian_shape(op, theta);
  const at::Tensor grad = checked_gradient(op, "grad_u", grad_u, theta, shape);
  const typename Kernels::DeviceGuard guard(theta.device());
  at::Tensor grad_theta = at::empty(theta.sizes(), theta.options());
  const int64_t n = shape.back();
  const int64_t rows = grad.numel() / n;
  if (rows > 0 && n > 1) {
    Kernels::spherical_to_cartesian_backward(grad, theta.contiguous(), grad_theta, rows, n);
  }
  return grad_theta;
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> cartesian_to_spherical(const at::Tensor& w) {
  const std::vector<int64_t> shape = angles_shape("cartesian_to_spherical", w);
  const typename Kernels::DeviceGuard guard(w.device());
  at::Tensor radius = at::empty(w.sizes().slice(0, w.dim() - 1), w.options());
  at::Tensor theta = at::empty(shape, w.options());
  const int64_t rows = radius.numel();
  if (rows > 0) Kernels::cartesian_to_spherical(w.contiguous(), radius, theta, rows, w.size(-1));
  return {radius, theta};
}

template <typename Kernels>
at::Tensor cartesian_to_spherical_backward(const std::optional<at::Tensor>& grad_radius,
                                           const std::optional<at::Tensor>& grad_theta,
                                           const at::Tensor& w) {
  const char* op = "cartesian_to_spherical_backward";
  const std::vector<int64_t> shape = angles_shape(op, w);
  const at::Tensor radius_grad =
      checked_gradient(op, "grad_radius", grad_radius, w, w.sizes().slice(0, w.dim() - 1));
  const at::Tensor theta_grad = checked_gradient(op, "grad_theta", grad_theta, w, shape);
  const typename Kernels::DeviceGuard guard(w.device());
  at::Tensor grad_w = at::empty(w.sizes(), w.options());
  const int64_t n = w.size(-1);
  const int64_t rows = grad_w.numel() / n;
  if (rows > 0) {
    Kernels::cartesian_to_spherical_backward(radius_grad, theta_grad, w.contiguous(), grad_w,
                                             rows, n);
  }
  return grad_w;
}

template <typename Kernels>
void register_sphere_kernels(torch::Library& m) {
  m.impl("spherical_to_cartesian", &spherical_to_cartesian<Kernels>);
  m.impl("spherical_to_cartesian_backward", &spherical_to_cartesian_backward<Kernels>);
  m.impl("cartesian_to_spherical", &cartesian_to_spherical<Kernels>);
  m.impl("cartesian_to_spherical_backward", &cartesian_to_spherical_backward<Kernels>);
}

}  // namespace fastact

// The hyperspherical maps on CPU: the Kernels of csrc/host/sphere.h around the
// per-instruction-set kernels of sphere_kernel.h, over rows split with at::parallel_for.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/isa.h"
#include "cpu/parallel.h"
#include "cpu/sphere_args.h"
#include "host/sphere.h"

FASTACT_DECLARE_CPU_KERNEL(SphericalToCartesianKernel, spherical_to_cartesian_rows)
FASTACT_DECLARE_CPU_KERNEL(SphericalToCartesianBackwardKernel, spherical_to_cartesian_backward_rows)
FASTACT_DECLARE_CPU_KERNEL(CartesianToSphericalKernel, cartesian_to_spherical_rows)
FASTACT_DECLARE_CPU_KERNEL(CartesianToSphericalBackwardKernel, cartesian_to_spherical_backward_rows)

namespace fastact::cpu {
namespace {

// Runs fn(SphericalRows) over the rows of a map with n coordinates per row, in parallel, in
// grains of whole groups of kSphericalRowGroup rows (the kernels scan those side by side), each
// task with its own scratch when `scratch` (the backward kernels').
template <typename Fn>
void for_spherical_rows(c10::ScalarType dtype, int64_t rows, int64_t n, bool scratch, Fn fn) {
  const int64_t groups = (rows + kSphericalRowGroup - 1) / kSphericalRowGroup;
  at::parallel_for(0, groups, grain_for(8 * n * kSphericalRowGroup),
                   [&](int64_t begin, int64_t end) {
                     // Aligned to a cache line: the kernels store whole vectors of 8 doubles
                     // into it, and a store that straddles two lines costs twice.
                     std::vector<double> work(scratch ? kSphericalScratch * n + 1 + 8 : 0);
                     const auto misalignment = reinterpret_cast<uintptr_t>(work.data()) % 64;
                     double* aligned = work.data() + (64 - misalignment) % 64 / sizeof(double);
                     fn(SphericalRows{dtype, n, begin * kSphericalRowGroup,
                                      std::min(rows, end * kSphericalRowGroup), aligned});
                   });
}

struct CpuSphere {
  using DeviceGuard = NoDeviceGuard;

  static void spherical_to_cartesian(const at::Tensor& theta, const at::Tensor& u, int64_t rows,
                                     int64_t n) {
    const auto kernel = spherical_to_cartesian_rows_for_this_cpu();
    for_spherical_rows(theta.scalar_type(), rows, n, false, [&](const SphericalRows& range) {
      kernel(range, theta.const_data_ptr(), u.mutable_data_ptr());
    });
  }

  static void spherical_to_cartesian_backward(const at::Tensor& grad_u, const at::Tensor& theta,
                                              const at::Tensor& grad_theta, int64_t rows,
                                              int64_t n) {
    const auto kernel = spherical_to_cartesian_backward_rows_for_this_cpu();
    for_spherical_rows(theta.scalar_type(), rows, n, true, [&](const SphericalRows& range) {
      kernel(range, grad_u.const_data_ptr(), theta.const_data_ptr(),
             grad_theta.mutable_data_ptr());
    });
  }

  static void cartesian_to_spherical(const at::Tensor& w, const at::Tensor& radius,
                                     const at::Tensor& theta, int64_t rows, int64_t n) {
    const auto kernel = cartesian_to_spherical_rows_for_this_cpu();
    for_spherical_rows(w.scalar_type(), rows, n, false, [&](const SphericalRows& range) {
      kernel(range, w.const_data_ptr(), radius.mutable_data_ptr(), theta.mutable_data_ptr());
    });
  }

  static void cartesian_to_spherical_backward(const at::Tensor& grad_radius,
                                              const at::Tensor& grad_theta, const at::Tensor& w,
                                              const at::Tensor& grad_w, int64_t rows, int64_t n) {
    const auto kernel = cartesian_to_spherical_backward_rows_for_this_cpu();
    for_spherical_rows(w.scalar_type(), rows, n, true, [&](const SphericalRows& range) {
      kernel(range, grad_radius.defined() ? grad_radius.const_data_ptr() : nullptr,
             grad_theta.defined() ? grad_theta.const_data_ptr() : nullptr, w.const_data_ptr(),
             grad_w.mutable_data_ptr());
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CPU, m) { register_sphere_kernels<CpuSphere>(m); }

}  // namespace fastact::cpu

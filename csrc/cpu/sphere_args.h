// Arguments of the hyperspherical maps' CPU kernels (csrc/cpu/sphere_kernel.h), shared by the
// glue and every instruction-set copy of the kernels. Plain data only: nothing here is compiled
// per ISA.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace fastact::cpu {

// The map kernels scan groups of this many rows side by side (16- and 32-bit inputs), and
// need kSphericalScratch * n doubles of scratch for a backward task.
constexpr int kSphericalRowGroup = 8;
constexpr int64_t kSphericalScratch = 2 * kSphericalRowGroup;

// A range of rows of a hyperspherical map: `n` coordinates per row (n - 1 angles), row-major.
struct SphericalRows {
  c10::ScalarType dtype;
  int64_t n;
  int64_t row_begin, row_end;
  double* work;  // scratch for the backward kernels: kSphericalScratch * n + 1 doubles,
                 // 64-byte aligned
};

// The kernels' function types (csrc/cpu/sphere_kernel.h has what each computes).
using SphericalToCartesianKernel = void(const SphericalRows& rows, const void* theta, void* u);
using SphericalToCartesianBackwardKernel = void(const SphericalRows& rows, const void* grad_u,
                                                const void* theta, void* grad_theta);
using CartesianToSphericalKernel = void(const SphericalRows& rows, const void* w, void* radius,
                                        void* theta);
using CartesianToSphericalBackwardKernel = void(const SphericalRows& rows, const void* grad_radius,
                                                const void* grad_theta, const void* w,
                                                void* grad_w);

}  // namespace fastact::cpu

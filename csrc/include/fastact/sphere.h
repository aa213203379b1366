// The hyperspherical maps of the geometric parameterisation (GmP) of ReLU units (Chen & Ge,
// arXiv 2305.15912; the layer is fastact/layer.h): u(theta) on the unit sphere in
// hyperspherical coordinates, and back. The formulas shared by the CPU and CUDA kernels; the
// kernels supply the loops (scans along a row).
//
// Indices are 0-based: theta has n - 1 angles, u has n coordinates, s_k = sin(theta_k),
// c_k = cos(theta_k), and P_k = prod_{j<k} s_j (P_0 = 1).
#pragma once

#include <math.h>
#include <stdint.h>

#include "fastact/common.h"

namespace fastact {

// ---- spherical_to_cartesian ----------------------------------------------------------------
// u_k = P_k c'_k with the cosine factor c'_k = c_k for k < n - 1 and c'_{n-1} = 1 (the last
// coordinate is P_{n-1}).
//
// Backward, with g = dL/du: the reverse scan S_{n-1} = g_{n-1}, S_k = g_k c'_k + s_k S_{k+1},
// then dL/dtheta_k = P_k (c_k S_{k+1} - g_k s_k). Products and sums only, never a division,
// so an angle with s_j = 0 gives every later angle an exact zero gradient. The kernels scan S
// from the right and P from the left, so the gradient is split into the factor known in the
// reverse scan and the prefix product applied after.
// (By reference: the CPU kernels call them with vectors of lanes.)
template <typename T>
FASTACT_HOST_DEVICE T spherical_suffix_step(const T& g, const T& cosine_factor, const T& s,
                                            const T& suffix_next) {
  return g * cosine_factor + s * suffix_next;
}

template <typename T>
FASTACT_HOST_DEVICE T spherical_angle_grad_factor(const T& c, const T& s, const T& g,
                                                  const T& suffix_next) {
  return c * suffix_next - g * s;
}

// ---- cartesian_to_spherical ----------------------------------------------------------------
// With t_k = ||w_{k:}|| (t_0 = radius): theta_k = atan2(t_{k+1}, w_k) in [0, pi] for k < n - 2,
// and the last angle theta_{n-2} = atan2(w_{n-1}, w_{n-2}) in (-pi, pi], which keeps the sign of
// w_{n-1}. Convention where the angle is not unique: an angle whose coordinates are all zero
// (t_k = 0, i.e. both atan2 arguments 0) is 0. Then radius * spherical_to_cartesian(theta)
// gives w back for every w (a zero row: radius 0, all angles 0).
template <typename T>
FASTACT_HOST_DEVICE T cartesian_angle(T y, T x) {
  return (x == T(0) && y == T(0)) ? T(0) : atan2(y, x);
}

// Backward, with G_k = dL/dtheta_k and G_r = dL/dradius (0 < k < n - 2 below):
//   dtheta_k/dw_k = -t_{k+1} / t_k^2,   dtheta_k/dw_j = w_k w_j / (t_k^2 t_{k+1}) for j > k,
//   dtheta_{n-2}/dw_{n-2} = -w_{n-1} / t_{n-2}^2,   dtheta_{n-2}/dw_{n-1} = w_{n-2} / t_{n-2}^2,
//   dradius/dw_j = w_j / radius.
// So dL/dw_j = w_j (G_r / radius + H_j) + D_j with the prefix sum H_j = sum_{k<j, k<n-2} h_k,
// h_k = G_k w_k / (t_k^2 t_{k+1}), and the diagonal term D_j. The map is not differentiable
// where a denominator is zero (the angles are not unique there); those terms are 0, which keeps
// every gradient finite.
template <typename T>
FASTACT_HOST_DEVICE T cartesian_prefix_term(T grad_angle, T w, T tail, T tail_next) {
  return tail_next > T(0) ? grad_angle * w / (tail * tail * tail_next) : T(0);
}

// D_k for k < n - 2.
template <typename T>
FASTACT_HOST_DEVICE T cartesian_diagonal_term(T grad_angle, T tail, T tail_next) {
  return tail > T(0) ? -grad_angle * tail_next / (tail * tail) : T(0);
}

// D_{n-2} (other = w_{n-1}, sign -1) and D_{n-1} (other = w_{n-2}, sign +1): the last angle's
// atan2 derivatives, with squared_norm = w_{n-2}^2 + w_{n-1}^2.
template <typename T>
FASTACT_HOST_DEVICE T cartesian_last_angle_term(T grad_angle, T other, T squared_norm) {
  return squared_norm > T(0) ? grad_angle * other / squared_norm : T(0);
}

template <typename T>
FASTACT_HOST_DEVICE T cartesian_radius_factor(T grad_radius, T radius) {
  return radius > T(0) ? grad_radius / radius : T(0);
}

// The exponent e of a power of two 2^-e that brings a row's largest |w_k| into [0.5, 1), so that
// sums of squares neither overflow nor underflow (0 for zero and non-finite rows). load(k)
// returns w_k as a double.
template <typename Load>
FASTACT_HOST_DEVICE int cartesian_row_exponent(int64_t n, Load load) {
  double largest = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const double a = abs_value(load(k));
    largest = a > largest ? a : largest;
  }
  int exponent = 0;
  if (largest > 0.0 && largest <= 1.7976931348623157e308) {
    frexp(largest, &exponent);
    exponent = exponent < -1021 ? -1021 : exponent;
  }
  return exponent;
}

// One row of cartesian_to_spherical, sequential in double from the right: store_angle(k, theta_k)
// for k < n - 1; returns the radius.
template <typename Load, typename StoreAngle>
FASTACT_HOST_DEVICE double cartesian_to_spherical_row(int64_t n, Load load,
                                                      StoreAngle store_angle) {
  const int exponent = cartesian_row_exponent(n, load);
  const double scale = ldexp(1.0, -exponent);
  double tail_squared = 0.0;  // sum_{j>k} w_j^2, scaled
  double next = 0.0;          // w_{k+1}, scaled
  for (int64_t k = n - 1; k >= 0; --k) {
    const double wk = load(k) * scale;
    if (k == n - 2) {
      store_angle(k, cartesian_angle(next, wk));
    } else if (k < n - 2) {
      store_angle(k, cartesian_angle(sqrt(tail_squared), wk));
    }
    tail_squared += wk * wk;
    next = wk;
  }
  return ldexp(sqrt(tail_squared), exponent);
}

// One row of its backward: store(j, dL/dw_j) from grad_radius and grad_angle(k) = dL/dtheta_k
// (0 when absent), with `tails` scratch for n + 1 doubles.
template <typename Load, typename GradAngle, typename Store>
FASTACT_HOST_DEVICE void cartesian_to_spherical_backward_row(int64_t n, Load load,
                                                             double grad_radius,
                                                             GradAngle grad_angle, Store store,
                                                             double* tails) {
  const int exponent = cartesian_row_exponent(n, load);
  const double scale = ldexp(1.0, -exponent);
  double tail_squared = 0.0;
  tails[n] = 0.0;
  for (int64_t k = n - 1; k >= 0; --k) {
    const double wk = load(k) * scale;
    tail_squared += wk * wk;
    tails[k] = sqrt(tail_squared);  // t_k, scaled
  }
  const double radial = cartesian_radius_factor(grad_radius, tails[0]);
  const double last_grad = grad_angle(n - 2);
  const double w_second_last = load(n - 2) * scale;
  const double w_last = load(n - 1) * scale;
  const double last_squared = w_second_last * w_second_last + w_last * w_last;
  double prefix_sum = 0.0;  // H_j
  for (int64_t j = 0; j < n; ++j) {
    const double wj = load(j) * scale;
    double diagonal;
    if (j < n - 2) {
      diagonal = cartesian_diagonal_term(grad_angle(j), tails[j], tails[j + 1]);
    } else if (j == n - 2) {
      diagonal = -cartesian_last_angle_term(last_grad, w_last, last_squared);
    } else {
      diagonal = cartesian_last_angle_term(last_grad, w_second_last, last_squared);
    }
    // The angles are scale-invariant: their derivatives in w are `scale` times those in the
    // scaled w; the radius's are the same in both.
    store(j, wj * radial + scale * (wj * prefix_sum + diagonal));
    if (j < n - 2) prefix_sum += cartesian_prefix_term(grad_angle(j), wj, tails[j], tails[j + 1]);
  }
}

}  // namespace fastact

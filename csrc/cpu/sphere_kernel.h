// The hyperspherical maps' CPU kernels; compiled once per instruction set by
// csrc/cpu/isa_*.cpp.
//
// The maps scan each row in double precision whatever the dtype: a float32 prefix product of
// thousands of sines would drift (|u| - 1 ~ 1e-6 at n = 4608), a double one stays at float32
// rounding.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/sphere_args.h"
#include "cpu/sphere_lanes.h"
#include "cpu/storage.h"
#include "fastact/sphere.h"

namespace fastact::cpu::FASTACT_ISA {

// One row: theta [n - 1] -> u [n], u_k = P_k c'_k with the prefix products in double. Returns
// false when some angle was out of the polynomial's range (the row is then redone with libm).
template <bool kLibm, typename S>
FASTACT_HOST_DEVICE bool spherical_to_cartesian_row(const S* theta, S* u, int64_t n) {
  constexpr int kVectors = kAngleVectors<S, kLibm>;
  const int64_t angles = n - 1;
  const V4 ones = splat(1.0);
  Bits4 bad = Bits4{};
  double carry = 1.0;  // P_k
  int64_t k = 0;
  for (; k + 4 * kVectors <= angles; k += 4 * kVectors) {
    V4 sin[kVectors], cos[kVectors];
    block_sincos<kLibm>(theta, k, sin, cos, bad);
#pragma GCC unroll 2  // keeps the vectors in registers
    for (int v = 0; v < kVectors; ++v) {
      const V4 products = inclusive_products(sin[v]);
      store4(u, k + 4 * v, (carry * shift_up_1(products, ones)) * cos[v]);
      carry *= products[3];
    }
  }
  for (; k < angles; ++k) {
    const SinCos<double> a = angle_sincos<kLibm, 1>(load_double(theta, k), bad);
    store_double(u, k, carry * a.cos);
    carry *= a.sin;
  }
  store_double(u, angles, carry);
  return (bad[0] | bad[1] | bad[2] | bad[3]) == 0;
}

// Rows [0, 8) of theta [., n - 1] -> u [., n] (row strides n - 1 and n). Returns false when some
// angle was out of the float polynomial's range (the rows are then redone with libm).
template <typename S>
FASTACT_HOST_DEVICE bool spherical_to_cartesian_row_group(const S* theta, S* u, int64_t n) {
  const int64_t angles = n - 1;
  Int8 bad = Int8{};
  Bits4 bad_tail = Bits4{};
  V8 prefix = V8{} + 1.0;  // P_k of the 8 rows
  int64_t k = 0;
  for (; k + 8 <= angles; k += 8) {
    Float8 block[8];
    load_block(theta, angles, k, block);
    for (int j = 0; j < 8; ++j) {
      bad |= unreducible_float8(block[j]);
      const SinCosFloat8 a = sincos_float8(block[j]);
      block[j] = narrow(prefix * a.cos);
      prefix *= a.sin;
    }
    store_block(u, n, k, block);
  }
  // The last angles (fewer than 8) and the last coordinate, row by row.
  for (int r = 0; r < kRowGroup; ++r) {
    double carry = prefix[r];
    for (int64_t tail = k; tail < angles; ++tail) {
      const SinCos<double> a =
          angle_sincos<false, 1>(load_double(theta + r * angles, tail), bad_tail);
      store_double(u + r * n, tail, carry * a.cos);
      carry *= a.sin;
    }
    store_double(u + r * n, angles, carry);
  }
  int any = bad_tail[0] | bad_tail[1] | bad_tail[2] | bad_tail[3];
  for (int r = 0; r < 8; ++r) any |= bad[r];
  return any == 0;
}

void spherical_to_cartesian_rows(const SphericalRows& rows, const void* theta, void* u) {
  dispatch_storage(rows.dtype, [&](auto storage) {
    using S = decltype(storage);
    const int64_t n = rows.n;
    const auto at = [&](int64_t row) { return static_cast<const S*>(theta) + row * (n - 1); };
    const auto out = [&](int64_t row) { return static_cast<S*>(u) + row * n; };
    int64_t row = rows.row_begin;
    if constexpr (!std::is_same_v<S, double>) {
      for (; row + kRowGroup <= rows.row_end; row += kRowGroup) {
        if (!spherical_to_cartesian_row_group(at(row), out(row), n)) {
          for (int r = 0; r < kRowGroup; ++r) {
            spherical_to_cartesian_row<true>(at(row + r), out(row + r), n);
          }
        }
      }
    }
    for (; row < rows.row_end; ++row) {
      if (!spherical_to_cartesian_row<false>(at(row), out(row), n)) {
        spherical_to_cartesian_row<true>(at(row), out(row), n);
      }
    }
  });
}

// One row of the backward: grad_u [n], theta [n - 1] -> grad_theta [n - 1]. From the right, the
// affine scan S_k = s_k S_{k+1} + g_k c_k (in-vector: compose the maps of neighbouring lanes,
// then apply the carry) gives factor_k = c_k S_{k+1} - g_k s_k, kept with s_k in `work`; from
// the left, the prefix products times the factors (fastact/sphere.h).
template <bool kLibm, typename S>
FASTACT_HOST_DEVICE bool spherical_to_cartesian_backward_row(const S* grad_u, const S* theta,
                                                             S* grad_theta, int64_t n,
                                                             double* work) {
  constexpr int kVectors = kAngleVectors<S, kLibm>;
  const int64_t angles = n - 1;
  const int64_t vectorised = angles - angles % (4 * kVectors);
  double* sines = work;
  double* factors = work + n;
  Bits4 bad = Bits4{};
  double suffix = load_double(grad_u, angles);  // S_{k+1}
  for (int64_t k = angles - 1; k >= vectorised; --k) {
    const SinCos<double> a = angle_sincos<kLibm, 1>(load_double(theta, k), bad);
    const double g = load_double(grad_u, k);
    sines[k] = a.sin;
    factors[k] = spherical_angle_grad_factor(a.cos, a.sin, g, suffix);
    suffix = spherical_suffix_step(g, a.cos, a.sin, suffix);
  }
  const V4 ones = splat(1.0);
  const V4 zeros = V4{};
  for (int64_t k = vectorised - 4 * kVectors; k >= 0; k -= 4 * kVectors) {
    V4 sin[kVectors], cos[kVectors];
    block_sincos<kLibm>(theta, k, sin, cos, bad);
#pragma GCC unroll 2  // keeps the vectors in registers
    for (int v = kVectors - 1; v >= 0; --v) {
      const int64_t first = k + 4 * v;
      const V4 g = load4(grad_u, first);
      const V4 gc = g * cos[v];
      // Lane j maps S_{j+1} to S_j = s_j S_{j+1} + g_j c_j; compose with lane j+1, then j+2..3.
      const V4 slope_1 = sin[v] * shift_down_1(sin[v], ones);
      const V4 offset_1 = sin[v] * shift_down_1(gc, zeros) + gc;
      const V4 slope = slope_1 * shift_down_2(slope_1, ones);
      const V4 offset = slope_1 * shift_down_2(offset_1, zeros) + offset_1;
      const V4 suffix_next = shift_down_1(slope * suffix + offset, splat(suffix));  // S_{j+1}
      const V4 factor = spherical_angle_grad_factor(cos[v], sin[v], g, suffix_next);
      std::memcpy(sines + first, &sin[v], sizeof(V4));
      std::memcpy(factors + first, &factor, sizeof(V4));
      suffix = slope[0] * suffix + offset[0];  // S_first: the only step on the critical path
    }
  }
  const V4 ones_again = splat(1.0);
  double carry = 1.0;
  int64_t k = 0;
  for (; k < vectorised; k += 4) {
    V4 s, factor;
    std::memcpy(&s, sines + k, sizeof(V4));
    std::memcpy(&factor, factors + k, sizeof(V4));
    const V4 products = inclusive_products(s);
    store4(grad_theta, k, (carry * shift_up_1(products, ones_again)) * factor);
    carry *= products[3];
  }
  for (; k < angles; ++k) {
    store_double(grad_theta, k, carry * factors[k]);
    carry *= sines[k];
  }
  return (bad[0] | bad[1] | bad[2] | bad[3]) == 0;
}

// Rows [0, 8) of the backward (lanes are rows, as spherical_to_cartesian_row_group): from the
// right, S = s S' + g c one angle at a time, factor = c S' - g s, kept with s in `work`
// (16 (n - 1) doubles, lanes interleaved); from the left, the prefix products times the factors.
template <typename S>
FASTACT_HOST_DEVICE bool spherical_to_cartesian_backward_row_group(const S* grad_u, const S* theta,
                                                                   S* grad_theta, int64_t n,
                                                                   double* work) {
  const int64_t angles = n - 1;
  const int64_t vectorised = angles - angles % 8;
  double* sines = work;
  double* factors = work + kRowGroup * angles;
  Int8 bad = Int8{};
  Bits4 bad_tail = Bits4{};
  V8 suffix;  // S_{k+1} of the 8 rows
  for (int r = 0; r < kRowGroup; ++r) {
    // The last angles (fewer than 8), from the right, row by row.
    double row_suffix = load_double(grad_u + r * n, angles);
    for (int64_t k = angles - 1; k >= vectorised; --k) {
      const SinCos<double> a = angle_sincos<false, 1>(load_double(theta + r * angles, k), bad_tail);
      const double g = load_double(grad_u + r * n, k);
      sines[k * kRowGroup + r] = a.sin;
      factors[k * kRowGroup + r] = spherical_angle_grad_factor(a.cos, a.sin, g, row_suffix);
      row_suffix = spherical_suffix_step(g, a.cos, a.sin, row_suffix);
    }
    suffix[r] = row_suffix;
  }
  for (int64_t k = vectorised - 8; k >= 0; k -= 8) {
    Float8 angle_block[8], grad_block[8];
    load_block(theta, angles, k, angle_block);
    load_block(grad_u, n, k, grad_block);
    for (int j = 7; j >= 0; --j) {
      bad |= unreducible_float8(angle_block[j]);
      const SinCosFloat8 a = sincos_float8(angle_block[j]);
      const V8 g = widen(grad_block[j]);
      const V8 factor = spherical_angle_grad_factor(a.cos, a.sin, g, suffix);
      std::memcpy(sines + (k + j) * kRowGroup, &a.sin, sizeof(V8));
      std::memcpy(factors + (k + j) * kRowGroup, &factor, sizeof(V8));
      suffix = spherical_suffix_step(g, a.cos, a.sin, suffix);
    }
  }
  V8 prefix = V8{} + 1.0;
  int64_t k = 0;
  for (; k < vectorised; k += 8) {
    Float8 block[8];
    for (int j = 0; j < 8; ++j) {
      V8 s, factor;
      std::memcpy(&s, sines + (k + j) * kRowGroup, sizeof(V8));
      std::memcpy(&factor, factors + (k + j) * kRowGroup, sizeof(V8));
      block[j] = narrow(prefix * factor);
      prefix *= s;
    }
    store_block(grad_theta, angles, k, block);
  }
  for (int r = 0; r < kRowGroup; ++r) {
    double carry = prefix[r];
    for (int64_t tail = k; tail < angles; ++tail) {
      store_double(grad_theta + r * angles, tail, carry * factors[tail * kRowGroup + r]);
      carry *= sines[tail * kRowGroup + r];
    }
  }
  int any = bad_tail[0] | bad_tail[1] | bad_tail[2] | bad_tail[3];
  for (int r = 0; r < 8; ++r) any |= bad[r];
  return any == 0;
}

void spherical_to_cartesian_backward_rows(const SphericalRows& rows, const void* grad_u,
                                          const void* theta, void* grad_theta) {
  dispatch_storage(rows.dtype, [&](auto storage) {
    using S = decltype(storage);
    const int64_t n = rows.n;
    const auto g = [&](int64_t row) { return static_cast<const S*>(grad_u) + row * n; };
    const auto t = [&](int64_t row) { return static_cast<const S*>(theta) + row * (n - 1); };
    const auto out = [&](int64_t row) { return static_cast<S*>(grad_theta) + row * (n - 1); };
    int64_t row = rows.row_begin;
    if constexpr (!std::is_same_v<S, double>) {
      for (; row + kRowGroup <= rows.row_end; row += kRowGroup) {
        if (!spherical_to_cartesian_backward_row_group(g(row), t(row), out(row), n, rows.work)) {
          for (int r = 0; r < kRowGroup; ++r) {
            spherical_to_cartesian_backward_row<true>(g(row + r), t(row + r), out(row + r), n,
                                                      rows.work);
          }
        }
      }
    }
    for (; row < rows.row_end; ++row) {
      if (!spherical_to_cartesian_backward_row<false>(g(row), t(row), out(row), n, rows.work)) {
        spherical_to_cartesian_backward_row<true>(g(row), t(row), out(row), n, rows.work);
      }
    }
  });
}

// w [rows, n] -> radius [rows], theta [rows, n - 1] (fastact/sphere.h, a row at a time).
void cartesian_to_spherical_rows(const SphericalRows& rows, const void* w, void* radius,
                                 void* theta) {
  dispatch_storage(rows.dtype, [&](auto storage) {
    using S = decltype(storage);
    const int64_t n = rows.n;
    for (int64_t row = rows.row_begin; row < rows.row_end; ++row) {
      const S* w_row = static_cast<const S*>(w) + row * n;
      S* theta_row = static_cast<S*>(theta) + row * (n - 1);
      const double r = cartesian_to_spherical_row(
          n, [&](int64_t k) { return load_double(w_row, k); },
          [&](int64_t k, double angle) { store_double(theta_row, k, angle); });
      store_double(static_cast<S*>(radius), row, r);
    }
  });
}

// grad_radius [rows] and grad_theta [rows, n - 1] (either may be null: zero) -> grad_w.
void cartesian_to_spherical_backward_rows(const SphericalRows& rows, const void* grad_radius,
                                          const void* grad_theta, const void* w, void* grad_w) {
  dispatch_storage(rows.dtype, [&](auto storage) {
    using S = decltype(storage);
    const int64_t n = rows.n;
    for (int64_t row = rows.row_begin; row < rows.row_end; ++row) {
      const S* w_row = static_cast<const S*>(w) + row * n;
      const S* grad_theta_row =
          grad_theta == nullptr ? nullptr : static_cast<const S*>(grad_theta) + row * (n - 1);
      S* out = static_cast<S*>(grad_w) + row * n;
      cartesian_to_spherical_backward_row(
          n, [&](int64_t k) { return load_double(w_row, k); },
          grad_radius == nullptr ? 0.0 : load_double(static_cast<const S*>(grad_radius), row),
          [&](int64_t k) {
            return grad_theta_row == nullptr ? 0.0 : load_double(grad_theta_row, k);
          },
          [&](int64_t j, double value) { store_double(out, j, value); }, rows.work);
    }
  });
}

}  // namespace fastact::cpu::FASTACT_ISA

// The hyperspherical maps' CPU kernels; compiled once per instruction set by
// csrc/cpu/isa_*.cpp.
//
// The maps scan each row in double precision for float32 and float64: a float32 prefix product
// of thousands of sines would drift (|u| - 1 ~ 1e-6 at n = 4608), a double one stays at float32
// rounding. The 16-bit dtypes' groups of 8 rows scan in float (sphere_lanes.h: ScanFloat),
// whose drift stays far below their rounding.
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

// The blocks of 8 angles of rows [0, 8) of theta [., n - 1] -> u [., n] (row strides n - 1 and
// n) from angle k on, the prefix products P_k in `prefix` (vectors of 8 W), until the last whole
// block or until a float scan leaves float's range. Returns the angle reached.
template <typename W, typename S>
FASTACT_HOST_DEVICE int64_t spherical_to_cartesian_blocks(const S* theta, S* u, int64_t n,
                                                          int64_t k, Scan8<W>& prefix, Int8& bad) {
  using P = Scan8<W>;
  const int64_t angles = n - 1;
  for (; k + 8 <= angles && !scan_leaves_float_range(prefix); k += 8) {
    Float8 block[8];
    load_block(theta, angles, k, block);
    for (int j = 0; j < 8; j += 2) {
      SinCos<P> a[2];
      sincos_pair<W>(block[j], block[j + 1], a, bad);
      for (int h = 0; h < 2; ++h) {
        block[j + h] = to_float8(prefix * a[h].cos);
        prefix *= a[h].sin;
      }
    }
    store_block(u, n, k, block);
  }
  return k;
}

// Rows [0, 8) of theta [., n - 1] -> u [., n], scanned in ScanFloat<S> (then in double where a
// float scan leaves float's range). Returns false when some angle was out of the float
// polynomial's range (the rows are then redone with libm).
template <typename S>
FASTACT_HOST_DEVICE bool spherical_to_cartesian_row_group(const S* theta, S* u, int64_t n) {
  using W = ScanFloat<S>;
  const int64_t angles = n - 1;
  Int8 bad = Int8{};
  Bits4 bad_tail = Bits4{};
  Scan8<W> prefix = Scan8<W>{} + W(1);  // P_k of the 8 rows
  int64_t k = spherical_to_cartesian_blocks<W>(theta, u, n, 0, prefix, bad);
  V8 wide_prefix = from_scan8(prefix);
  k = spherical_to_cartesian_blocks<double>(theta, u, n, k, wide_prefix, bad);
  // The last angles (fewer than 8) and the last coordinate, row by row.
  for (int r = 0; r < kRowGroup; ++r) {
    double carry = wide_prefix[r];
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

// The left-to-right pass of the backward of rows [0, 8) (spherical_to_cartesian_backward_row_group)
// over the blocks of 8 angles from angle k on: grad_theta = P_k factor_k, with the prefix products
// in `prefix` (vectors of 8 floats or doubles) and the sines and factors (in W) from the right
// pass, until the last whole block or until a float scan leaves float's range. Returns the angle
// reached.
template <typename W, typename P, typename S>
FASTACT_HOST_DEVICE int64_t backward_prefix_blocks(const W* sines, const W* factors, S* grad_theta,
                                                   int64_t angles, int64_t k, P& prefix) {
  const int64_t vectorised = angles - angles % 8;
  for (; k < vectorised && !scan_leaves_float_range(prefix); k += 8) {
    Float8 block[8];
    for (int j = 0; j < 8; ++j) {
      Scan8<W> s, factor;
      std::memcpy(&s, sines + (k + j) * kRowGroup, sizeof(s));
      std::memcpy(&factor, factors + (k + j) * kRowGroup, sizeof(factor));
      block[j] = to_float8(prefix * to_scan8<P>(factor));
      prefix *= to_scan8<P>(s);
    }
    store_block(grad_theta, angles, k, block);
  }
  return k;
}

// Rows [0, 8) of the backward (lanes are rows, as spherical_to_cartesian_row_group, scans in
// ScanFloat<S>): from the right, S = s S' + g c one angle at a time, factor = c S' - g s, kept
// with s in `work` (16 (n - 1) values, lanes interleaved); from the left, the prefix products
// times the factors.
template <typename S>
FASTACT_HOST_DEVICE bool spherical_to_cartesian_backward_row_group(const S* grad_u, const S* theta,
                                                                   S* grad_theta, int64_t n,
                                                                   double* work) {
  using W = ScanFloat<S>;
  using P = Scan8<W>;
  const int64_t angles = n - 1;
  const int64_t vectorised = angles - angles % 8;
  W* sines = reinterpret_cast<W*>(work);
  W* factors = sines + kRowGroup * angles;
  Int8 bad = Int8{};
  Bits4 bad_tail = Bits4{};
  P suffix;  // S_{k+1} of the 8 rows
  for (int r = 0; r < kRowGroup; ++r) {
    // The last angles (fewer than 8), from the right, row by row.
    double row_suffix = load_double(grad_u + r * n, angles);
    for (int64_t k = angles - 1; k >= vectorised; --k) {
      const SinCos<double> a = angle_sincos<false, 1>(load_double(theta + r * angles, k), bad_tail);
      const double g = load_double(grad_u + r * n, k);
      sines[k * kRowGroup + r] = W(a.sin);
      factors[k * kRowGroup + r] = W(spherical_angle_grad_factor(a.cos, a.sin, g, row_suffix));
      row_suffix = spherical_suffix_step(g, a.cos, a.sin, row_suffix);
    }
    suffix[r] = W(row_suffix);
  }
  for (int64_t k = vectorised - 8; k >= 0; k -= 8) {
    Float8 angle_block[8], grad_block[8];
    load_block(theta, angles, k, angle_block);
    load_block(grad_u, n, k, grad_block);
    for (int j = 6; j >= 0; j -= 2) {
      SinCos<P> a[2];
      sincos_pair<W>(angle_block[j], angle_block[j + 1], a, bad);
      for (int h = 1; h >= 0; --h) {
        const P g = from_float8<P>(grad_block[j + h]);
        const P factor = spherical_angle_grad_factor(a[h].cos, a[h].sin, g, suffix);
        std::memcpy(sines + (k + j + h) * kRowGroup, &a[h].sin, sizeof(P));
        std::memcpy(factors + (k + j + h) * kRowGroup, &factor, sizeof(P));
        suffix = spherical_suffix_step(g, a[h].cos, a[h].sin, suffix);
      }
    }
  }
  P prefix = P{} + W(1);
  int64_t k = backward_prefix_blocks(sines, factors, grad_theta, angles, 0, prefix);
  V8 wide_prefix = from_scan8(prefix);
  k = backward_prefix_blocks(sines, factors, grad_theta, angles, k, wide_prefix);
  for (int r = 0; r < kRowGroup; ++r) {
    double carry = wide_prefix[r];
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

// GmP CPU kernels; compiled once per instruction set by csrc/cpu/isa_*.cpp.
//
// The hyperspherical maps scan each row in double precision whatever the dtype: a float32
// prefix product of thousands of sines would drift (|u| - 1 ~ 1e-6 at n = 4608), a double one
// stays at float32 rounding. The layer's epilogues compute in Storage<S>::acc_t.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpu/geometric_args.h"
#include "cpu/isa.h"
#include "cpu/sincos.h"
#include "cpu/storage.h"
#include "fastact/geometric.h"

namespace fastact::cpu::FASTACT_ISA {
namespace {

template <typename S>
FASTACT_HOST_DEVICE double load_double(const S* p, int64_t i) {
  return double(Storage<S>::load(p[i]));
}

template <typename S>
FASTACT_HOST_DEVICE void store_double(S* p, int64_t i, double v) {
  using T = Storage<S>;
  p[i] = T::store(static_cast<typename T::acc_t>(v));
}

template <typename S>
FASTACT_HOST_DEVICE typename Storage<S>::acc_t dot_in_fixed_order(const S* a, const S* b,
                                                                  int64_t n) {
  using T = Storage<S>;
  using A = typename T::acc_t;
  // Eight partial sums in a fixed order: vectorises, and the result depends only on n.
  A partial[8] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; ++l) partial[l] += T::load(a[k + l]) * T::load(b[k + l]);
  }
  A tail = A(0);
  for (; k < n; ++k) tail += T::load(a[k]) * T::load(b[k]);
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7])) + tail;
}

}  // namespace

// The scans along a row are chains of dependent multiplies (4 cycles each). They run on
// vectors of 4 consecutive coordinates: an in-vector scan (two shuffle-and-multiply steps,
// off the critical path) and one multiply per vector on it.
using V4 = Lanes<4>::Value;
using Bits4 = Lanes<4>::Bits;

FASTACT_HOST_DEVICE V4 splat(double v) { return V4{} + v; }

// (f, v0, v1, v2) and (f, f, v0, v1): lanes moved up, the vacated ones from `fill`.
FASTACT_HOST_DEVICE V4 shift_up_1(const V4& v, const V4& fill) {
  return __builtin_shuffle(v, fill, Bits4{4, 0, 1, 2});
}
FASTACT_HOST_DEVICE V4 shift_up_2(const V4& v, const V4& fill) {
  return __builtin_shuffle(v, fill, Bits4{4, 5, 0, 1});
}
// (v1, v2, v3, f) and (v2, v3, f, f).
FASTACT_HOST_DEVICE V4 shift_down_1(const V4& v, const V4& fill) {
  return __builtin_shuffle(v, fill, Bits4{1, 2, 3, 4});
}
FASTACT_HOST_DEVICE V4 shift_down_2(const V4& v, const V4& fill) {
  return __builtin_shuffle(v, fill, Bits4{2, 3, 4, 5});
}

// Inclusive products within the vector: (s0, s0 s1, s0 s1 s2, s0 s1 s2 s3).
FASTACT_HOST_DEVICE V4 inclusive_products(const V4& s) {
  const V4 ones = splat(1.0);
  const V4 pairs = s * shift_up_1(s, ones);
  return pairs * shift_up_2(pairs, ones);
}

template <typename S>
FASTACT_HOST_DEVICE V4 load4(const S* p, int64_t k) {
  V4 v;
  for (int r = 0; r < 4; ++r) v[r] = load_double(p, k + r);
  return v;
}

template <typename S>
FASTACT_HOST_DEVICE void store4(S* p, int64_t k, const V4& v) {
  for (int r = 0; r < 4; ++r) store_double(p, k + r, v[r]);
}

// sin and cos of 1 or 4 angles in double: the polynomial (recording lanes out of its range in
// `bad`), or libm when the row is redone.
template <bool kLibm, int R>
FASTACT_HOST_DEVICE SinCos<typename Lanes<R>::Value> angle_sincos(const typename Lanes<R>::Value& x,
                                                                  Bits4& bad) {
  if constexpr (kLibm) {
    return sincos_libm<R>(x);
  } else {
    bad |= unreducible<R>(x);
    return sincos_reducible<R>(x);
  }
}

// The vectorised loops take blocks of consecutive angles as vectors of 4 doubles: 4 angles for
// float64 (computed in double) and for the libm redo, 8 for the other dtypes (computed in
// float, sincos_float8).
template <typename S, bool kLibm>
constexpr int kAngleVectors = (std::is_same_v<S, double> || kLibm) ? 1 : 2;

template <bool kLibm, typename S>
FASTACT_HOST_DEVICE void block_sincos(const S* theta, int64_t k, V4* sin, V4* cos, Bits4& bad) {
  if constexpr (kAngleVectors<S, kLibm> == 1) {
    const SinCos<V4> a = angle_sincos<kLibm, 4>(load4(theta, k), bad);
    sin[0] = a.sin;
    cos[0] = a.cos;
  } else {
    Float8 x;
    for (int r = 0; r < 8; ++r) x[r] = Storage<S>::load(theta[k + r]);
    Bits4 out_of_range[2];
    split_halves(widen(unreducible_float8(x)), out_of_range);
    bad |= out_of_range[0] | out_of_range[1];
    const SinCosFloat8 a = sincos_float8(x);
    split_halves(a.sin, sin);
    split_halves(a.cos, cos);
  }
}

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

// ---- eight rows at a time (16- and 32-bit inputs) -------------------------------------------
// The lanes are rows: an 8x8 transpose turns 8 rows x 8 angles into 8 vectors, each one angle of
// the 8 rows, so that a scan along the rows is one multiply per angle (no in-vector scan), and
// the results are transposed back. Sines and cosines in float (sincos_float8), products in
// double, on vectors of 8 doubles: one register with AVX-512, so no halves to split and join.
constexpr int kRowGroup = kSphericalRowGroup;
using V8 = Lanes<8>::Value;
static_assert(kRowGroup == 8);

// block[j][r] = p[r * stride + k + j] as float, for 8 rows r and 8 columns j.
template <typename S>
FASTACT_HOST_DEVICE void load_block(const S* p, int64_t stride, int64_t k, Float8* block) {
  for (int r = 0; r < 8; ++r) {
    for (int j = 0; j < 8; ++j) block[r][j] = Storage<S>::load(p[r * stride + k + j]);
  }
  transpose_8x8(block);
}

// p[r * stride + k + j] = block[j][r] (block is clobbered).
template <typename S>
FASTACT_HOST_DEVICE void store_block(S* p, int64_t stride, int64_t k, Float8* block) {
  transpose_8x8(block);
  for (int r = 0; r < 8; ++r) {
    for (int j = 0; j < 8; ++j) p[r * stride + k + j] = Storage<S>::store(block[r][j]);
  }
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
// the left, the prefix products times the factors (fastact/geometric.h).
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

// w [rows, n] -> radius [rows], theta [rows, n - 1] (fastact/geometric.h, a row at a time).
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

// z = radius * relu(z + bias) in place over the task's rows and mask words, and the mask.
void geometric_relu_epilogue(const EpilogueForward& args) {
  const OutputBlock& block = args.block;
  dispatch_storage(block.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    const A* radius = static_cast<const A*>(args.radius);
    const A* bias = static_cast<const A*>(args.bias);
    // One mask word: `count` (<= 32) columns from `first`.
    const auto word = [&](S* z, int64_t first, int64_t count) {
      uint32_t bits = 0;
      for (int64_t j = 0; j < count; ++j) {
        const int64_t m = first + j;
        const A pre = T::load(z[m]) + bias[m];
        z[m] = T::store(geometric_relu_output(radius[m], pre));
        bits |= uint32_t(geometric_relu_active(pre)) << j;
      }
      return bits;
    };
    for (int64_t row = block.row_begin; row < block.row_end; ++row) {
      S* z = static_cast<S*>(args.z) + row * block.cols;
      int32_t* mask = args.mask + row * block.words_per_row;
      for (int64_t w = block.word_begin; w < block.word_end; ++w) {
        const int64_t first = w * 32;
        const int64_t count = block.cols - first < 32 ? block.cols - first : 32;
        mask[w] = int32_t(count == 32 ? word(z, first, 32) : word(z, first, count));
      }
    }
  });
}

// grad_masked = mask ? grad : 0 over the task's rows and words; their column sums into `sums`.
void geometric_relu_epilogue_backward(const EpilogueBackward& args) {
  const OutputBlock& block = args.block;
  dispatch_storage(block.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    A* sums = static_cast<A*>(args.sums);
    const int64_t first_column = block.word_begin * 32;
    const int64_t end_column = block.word_end * 32 < block.cols ? block.word_end * 32 : block.cols;
    for (int64_t m = first_column; m < end_column; ++m) sums[m] = A(0);
    const auto word = [&](const S* grad, S* out, uint32_t bits, int64_t first, int64_t count) {
      for (int64_t j = 0; j < count; ++j) {
        const int64_t m = first + j;
        const A g = geometric_relu_masked_grad(T::load(grad[m]), ((bits >> j) & 1u) != 0);
        out[m] = T::store(g);
        sums[m] += g;
      }
    };
    for (int64_t row = block.row_begin; row < block.row_end; ++row) {
      const S* grad = static_cast<const S*>(args.grad) + row * block.cols;
      S* out = static_cast<S*>(args.grad_masked) + row * block.cols;
      const int32_t* mask = args.mask + row * block.words_per_row;
      for (int64_t w = block.word_begin; w < block.word_end; ++w) {
        const int64_t first = w * 32;
        const int64_t count = block.cols - first < 32 ? block.cols - first : 32;
        const uint32_t bits = uint32_t(mask[w]);
        if (count == 32) {
          word(grad, out, bits, first, 32);
        } else {
          word(grad, out, bits, first, count);
        }
      }
    }
  });
}

// The per-channel step of the backward (geometric_args.h: RadialBackward).
void geometric_relu_radial_backward(const RadialBackward& args) {
  dispatch_storage(args.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    const A* partial = static_cast<const A*>(args.partial);
    const S* bias = static_cast<const S*>(args.bias);
    S* grad_bias = static_cast<S*>(args.grad_bias);
    for (int64_t c = args.channel_begin; c < args.channel_end; ++c) {
      S* grad_u = static_cast<S*>(args.grad_u) + c * args.fan_in;
      const S* u = static_cast<const S*>(args.u) + c * args.fan_in;
      const A radius = T::load(static_cast<const S*>(args.radius)[c]);
      A bias_term = A(0);
      A sum_all = A(0);
      for (int64_t p = 0; p < args.positions; ++p) {
        const A* column = partial + c * args.sum_stride_c + p * args.sum_stride_p;
        A s = A(0);
        for (int64_t b = 0; b < args.blocks; ++b) s += column[b * args.cols];
        sum_all += s;
        if (bias != nullptr) {
          bias_term += T::load(bias[c * args.bias_stride_c + p * args.bias_stride_p]) * s;
        }
        if (args.bias_per_position) grad_bias[c * args.positions + p] = T::store(radius * s);
      }
      if (!args.bias_per_position) grad_bias[c] = T::store(radius * sum_all);
      const A dot = dot_in_fixed_order(grad_u, u, args.fan_in);
      static_cast<S*>(args.grad_radius)[c] = T::store(dot + bias_term);
      for (int64_t k = 0; k < args.fan_in; ++k) grad_u[k] = T::store(radius * T::load(grad_u[k]));
      if (args.weight != nullptr) {
        S* weight = static_cast<S*>(args.weight) + c * args.fan_in;
        for (int64_t k = 0; k < args.fan_in; ++k) weight[k] = T::store(radius * T::load(u[k]));
      }
    }
  });
}

}  // namespace fastact::cpu::FASTACT_ISA

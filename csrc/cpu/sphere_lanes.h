// Vector helpers of the hyperspherical maps' CPU kernels (sphere_kernel.h); compiled once per
// instruction set with them. Scans run in double whatever the dtype: loads and stores through
// double, vectors of 4 doubles along a row, and blocks of 8 rows x 8 angles transposed so that
// the lanes are rows.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/isa.h"
#include "cpu/sincos.h"
#include "cpu/sphere_args.h"
#include "cpu/storage.h"

namespace fastact::cpu::FASTACT_ISA {

template <typename S>
FASTACT_HOST_DEVICE double load_double(const S* p, int64_t i) {
  return double(Storage<S>::load(p[i]));
}

template <typename S>
FASTACT_HOST_DEVICE void store_double(S* p, int64_t i, double v) {
  using T = Storage<S>;
  p[i] = T::store(static_cast<typename T::acc_t>(v));
}

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

// ---- eight rows at a time (16- and 32-bit inputs) -------------------------------------------
// The lanes are rows: an 8x8 transpose turns 8 rows x 8 angles into 8 vectors, each one angle of
// the 8 rows, so that a scan along the rows is one multiply per angle (no in-vector scan), and
// the results are transposed back. Sines and cosines in float (sincos_pair: the polynomials
// of two such vectors at once), products on vectors of 8 doubles (one AVX-512 register), or of 8
// floats for 16-bit inputs (ScanFloat).
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

// The scans of eight rows run in ScanFloat<S>: double for float32 inputs (see
// sphere_kernel.h), float for the 16-bit ones, whose results are rounded to 16 bits (float's
// rounding over thousands of factors stays far below theirs).
template <typename S>
using ScanFloat = std::conditional_t<sizeof(S) == 2, float, double>;
template <typename W>
using Scan8 = std::conditional_t<std::is_same_v<W, float>, Float8, V8>;

template <typename P>
FASTACT_HOST_DEVICE P from_float8(const Float8& v) {
  if constexpr (std::is_same_v<P, Float8>) {
    return v;
  } else {
    return widen(v);
  }
}

template <typename P>
FASTACT_HOST_DEVICE Float8 to_float8(const P& v) {
  if constexpr (std::is_same_v<P, Float8>) {
    return v;
  } else {
    return narrow(v);
  }
}

// A float scan gives way to a double one (the rest of the row group) once some row's prefix
// product falls below this: products past float's normal range would go through its slow
// subnormal arithmetic (they still would be exact: gradual underflow), and double's range is
// ample for the results, which round to 16 bits.
constexpr float kFloatScanFloor = 0x1p-96f;

// Whether a float scan should give way (always false for a double one).
template <typename P>
FASTACT_HOST_DEVICE bool scan_leaves_float_range(const P& prefix) {
  if constexpr (std::is_same_v<P, Float8>) {
    const Int8 small = (prefix < kFloatScanFloor) & (prefix > -kFloatScanFloor);
    Bits4 pairs;  // the 8 lanes' flags, two to a 64-bit lane
    static_assert(sizeof(pairs) == sizeof(small));
    std::memcpy(&pairs, &small, sizeof(small));
    return (pairs[0] | pairs[1] | pairs[2] | pairs[3]) != 0;
  } else {
    return false;
  }
}

// A vector of 8 scan values as P (widened from float to double, or as it is).
template <typename P, typename Q>
FASTACT_HOST_DEVICE P to_scan8(const Q& v) {
  if constexpr (std::is_same_v<P, Q>) {
    return v;
  } else {
    return widen(v);
  }
}

FASTACT_HOST_DEVICE V8 from_scan8(const Float8& v) { return widen(v); }
FASTACT_HOST_DEVICE V8 from_scan8(const V8& v) { return v; }

// The sines and cosines (in W) of two vectors of 8 angles, a and b, recording lanes out of the
// float polynomial's range in `bad`: the polynomials run on 16 float lanes at once.
template <typename W>
FASTACT_HOST_DEVICE void sincos_pair(const Float8& a, const Float8& b, SinCos<Scan8<W>>* out,
                                     Int8& bad) {
  bad |= unreducible_float8(a) | unreducible_float8(b);
  const Float16Lanes x = join_halves(a, b);
  if constexpr (std::is_same_v<W, float>) {
    const SinCos<Float16Lanes> r = sincos_float16_lanes(x);
    out[0] = {low_half(r.sin), low_half(r.cos)};
    out[1] = {high_half(r.sin), high_half(r.cos)};
  } else {
    const ReducedSinCosFloat<Float16Lanes, Int16Lanes> r =
        reduced_sincos_float<Float16Lanes, Int16Lanes>(x);
    out[0] = in_quadrant<8>(widen(low_half(r.sin_y)), 1.0 - widen(low_half(r.versine_y)),
                            widen(low_half(r.quadrant)));
    out[1] = in_quadrant<8>(widen(high_half(r.sin_y)), 1.0 - widen(high_half(r.versine_y)),
                            widen(high_half(r.quadrant)));
  }
}

// p[r * stride + k + j] = block[j][r] (block is clobbered).
template <typename S>
FASTACT_HOST_DEVICE void store_block(S* p, int64_t stride, int64_t k, Float8* block) {
  transpose_8x8(block);
  for (int r = 0; r < 8; ++r) {
    for (int j = 0; j < 8; ++j) p[r * stride + k + j] = Storage<S>::store(block[r][j]);
  }
}

}  // namespace fastact::cpu::FASTACT_ISA

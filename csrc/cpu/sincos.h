// sin and cos in double precision on several lanes at once (GCC vector extensions, lowered to
// the instruction set of the including translation unit), or on one double. glibc's sin and
// cos are scalar calls without -ffast-math. Cody-Waite reduction by pi/2 in three parts and the
// Cephes minimax polynomials on [-pi/4, pi/4]: within 2 ulp of the true values for
// |x| <= kSincosReducibleLimit; callers send larger or non-finite arguments to libm.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastact/common.h"

// The vectors here never cross a function boundary (everything is inlined), so GCC's notes on
// the ABI of 32-byte vectors in the baseline build do not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastact::cpu {

// R doubles side by side: a vector of R lanes, or a plain double for R = 1. (Spelled out per
// R: GCC drops a vector_size that depends on a template parameter.)
template <int R>
struct Lanes;
template <>
struct Lanes<1> {
  using Value = double;
  using Bits = int64_t;
};
template <>
struct Lanes<4> {
  using Value = double __attribute__((vector_size(32)));
  using Bits = int64_t __attribute__((vector_size(32)));
};
template <>
struct Lanes<8> {
  using Value = double __attribute__((vector_size(64)));
  using Bits = int64_t __attribute__((vector_size(64)));
};

template <typename V>
FASTACT_HOST_DEVICE double lane(const V& v, int r) {
  if constexpr (sizeof(V) == sizeof(double)) {
    return v;
  } else {
    return v[r];
  }
}

template <typename V>
FASTACT_HOST_DEVICE void set_lane(V& v, int r, double value) {
  if constexpr (sizeof(V) == sizeof(double)) {
    v = value;
  } else {
    v[r] = value;
  }
}

// j * kPio2Part1 and j * kPio2Part2 are exact below this bound (33-bit parts, |j| < 2^20).
constexpr double kSincosReducibleLimit = 0x1p19;

template <typename V>
struct SinCos {
  V sin;
  V cos;
};

// Horner's rule: c[0] z^(N-1) + c[1] z^(N-2) + ... + c[N-1].
template <typename V, typename C, int N>
FASTACT_HOST_DEVICE V polynomial(const V& z, const C (&c)[N]) {
  V result = V{} + c[0];
  for (int i = 1; i < N; ++i) result = result * z + c[i];
  return result;
}

// Cephes' minimax coefficients on [-pi/4, pi/4]: sin y = y + y z P(z), cos y = 1 - z/2 + z^2 Q(z)
// with z = y^2 (double), and the float versions.
constexpr double kCephesSin[] = {1.58962301576546568060e-10, -2.50507477628578072866e-8,
                                 2.75573136213857245213e-6,  -1.98412698295895385996e-4,
                                 8.33333333332211858878e-3,  -1.66666666666666307295e-1};
constexpr double kCephesCos[] = {-1.13585365213876817300e-11, 2.08757008419747316778e-9,
                                 -2.75573141792967388112e-7,  2.48015872888517045348e-5,
                                 -1.38888888888730564116e-3,  4.16666666666665929218e-2};
constexpr float kCephesSinFloat[] = {-1.9515295891e-4f, 8.3321608736e-3f, -1.6666654611e-1f};
constexpr float kCephesCosFloat[] = {2.443315711809948e-5f, -1.388731625493765e-3f,
                                     4.166664568298827e-2f};

// sin x and cos x from sin y, cos y of x = y + q pi/2 (q mod 4 in the low bits of `quadrant`):
// sin x = (sin y, cos y, -sin y, -cos y)[q], cos x = (cos y, -sin y, -cos y, sin y)[q]; a swap on
// bit 0, then sign flips: sin's on bit 1 of q, cos's on bit 1 of q + 1.
template <int R>
FASTACT_HOST_DEVICE SinCos<typename Lanes<R>::Value> in_quadrant(
    const typename Lanes<R>::Value& sin_y, const typename Lanes<R>::Value& cos_y,
    const typename Lanes<R>::Bits& quadrant) {
  using V = typename Lanes<R>::Value;
  using Bits = typename Lanes<R>::Bits;
  const auto swap = (quadrant & 1) != 0;
  V sin_x = swap ? cos_y : sin_y;
  V cos_x = swap ? sin_y : cos_y;
  Bits sin_bits, cos_bits;
  std::memcpy(&sin_bits, &sin_x, sizeof(sin_bits));
  std::memcpy(&cos_bits, &cos_x, sizeof(cos_bits));
  sin_bits ^= (quadrant & 2) << 62;
  cos_bits ^= ((quadrant + 1) & 2) << 62;
  std::memcpy(&sin_x, &sin_bits, sizeof(sin_x));
  std::memcpy(&cos_x, &cos_bits, sizeof(cos_x));
  return {sin_x, cos_x};
}

template <int R>
FASTACT_HOST_DEVICE SinCos<typename Lanes<R>::Value> sincos_reducible(
    const typename Lanes<R>::Value& x) {
  using V = typename Lanes<R>::Value;
  using Bits = typename Lanes<R>::Bits;
  // fdlibm's pi/2 = part1 + part2 + part3, the first two with 33 significant bits.
  constexpr double kPio2Part1 = 1.57079632673412561417e+00;
  constexpr double kPio2Part2 = 6.07710050630396597660e-11;
  constexpr double kPio2Part3 = 2.02226624879595063154e-21;
  constexpr double kTwoOverPi = 6.36619772367581382433e-01;
  constexpr double kRoundingShift = 0x1.8p52;  // adding it rounds to an integer (|q| < 2^51)

  const V shifted = x * kTwoOverPi + kRoundingShift;
  const V j = shifted - kRoundingShift;
  Bits bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  const Bits quadrant = bits & 3;  // j mod 4: the low bits of the shifted significand

  // x - j pi/2: the first two steps are exact (Sterbenz), the third adds the tail.
  const V y = ((x - j * kPio2Part1) - j * kPio2Part2) - j * kPio2Part3;
  const V z = y * y;
  const V sin_y = y + y * z * polynomial(z, kCephesSin);
  const V cos_y = 1.0 - 0.5 * z + z * z * polynomial(z, kCephesCos);
  return in_quadrant<R>(sin_y, cos_y, quadrant);
}

// Lanes outside the polynomial's range: |x| > kSincosReducibleLimit, NaN, inf. Accumulated
// over a row, which is then redone with libm (sincos_libm) in the rare case it is non-zero.
template <int R>
FASTACT_HOST_DEVICE typename Lanes<R>::Bits unreducible(const typename Lanes<R>::Value& x) {
  // On the bits: |x| as an integer exceeds the limit's bits for larger |x|, inf and NaN.
  constexpr int64_t kLimitBits = 0x4120000000000000;  // 0x1p19
  static_assert(kSincosReducibleLimit == 0x1p19);
  typename Lanes<R>::Bits bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return typename Lanes<R>::Bits((bits & 0x7FFFFFFFFFFFFFFF) > kLimitBits);
}

template <int R>
FASTACT_HOST_DEVICE SinCos<typename Lanes<R>::Value> sincos_libm(
    const typename Lanes<R>::Value& x) {
  SinCos<typename Lanes<R>::Value> result;
  for (int r = 0; r < R; ++r) {
    set_lane(result.sin, r, std::sin(lane(x, r)));
    set_lane(result.cos, r, std::cos(lane(x, r)));
  }
  return result;
}

// ---- 8 float angles (float32, float16, bfloat16 inputs) ----------------------------------
// Computed in float, 8 lanes, but accurate enough for a float64 prefix product over thousands
// of factors: the factor cos y (|y| <= pi/4) is carried as 1 - versine(y), with the versine
// accurate to float rounding *relative to itself*, so that a factor close to 1 (a unit
// initialised near the equator, the common case) is exact to ~1e-7 of its distance from 1.
// Factors further from 1 make the product decay, which bounds how much their float rounding
// accumulates. |u| - 1 stays at float32 rounding at n = 4608 (tests/test_geometric.py).
using Float8 = float __attribute__((vector_size(32)));
using Int8 = int32_t __attribute__((vector_size(32)));

// j * 1.5703125f (8 bits) and j * 4.837512969970703125e-4f (11 bits) are exact for |j| < 2^13.
constexpr float kSincosFloatReducibleLimit = 0x1p12f;

// The sines and cosines of 8 float angles, in double: one AVX-512 register each (two AVX2 ones).
using SinCosFloat8 = SinCos<Lanes<8>::Value>;

// With AVX-512 one instruction each: GCC lowers the generic conversions to two halves and an
// insert. (The zero-masked forms: the plain ones start from _mm512_undefined_*, which GCC 12
// warns about.)
FASTACT_HOST_DEVICE Lanes<8>::Value widen(const Float8& v) {
#if defined(FASTACT_ISA_VECTOR_BYTES) && FASTACT_ISA_VECTOR_BYTES == 64
  return Lanes<8>::Value(_mm512_maskz_cvtps_pd(0xff, __m256(v)));
#else
  return __builtin_convertvector(v, Lanes<8>::Value);
#endif
}

FASTACT_HOST_DEVICE Lanes<8>::Bits widen(const Int8& v) {
#if defined(FASTACT_ISA_VECTOR_BYTES) && FASTACT_ISA_VECTOR_BYTES == 64
  return Lanes<8>::Bits(_mm512_maskz_cvtepi32_epi64(0xff, __m256i(v)));
#else
  return __builtin_convertvector(v, Lanes<8>::Bits);
#endif
}

// The two halves of 8 lanes of 64 bits (values or bits).
template <typename V8, typename V4>
FASTACT_HOST_DEVICE void split_halves(const V8& v, V4* halves) {
  static_assert(sizeof(V8) == 2 * sizeof(V4));
  std::memcpy(halves, &v, sizeof(v));
}

FASTACT_HOST_DEVICE Int8 unreducible_float8(const Float8& x) {
  constexpr int32_t kLimitBits = 0x45800000;  // 0x1p12f
  static_assert(kSincosFloatReducibleLimit == 0x1p12f);
  Int8 bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return Int8((bits & 0x7FFFFFFF) > kLimitBits);
}

// 16 float angles: two vectors of 8 side by side (one AVX-512 register), where the polynomials
// run on twice the lanes per instruction.
using Float16Lanes = float __attribute__((vector_size(64)));
using Int16Lanes = int32_t __attribute__((vector_size(64)));

// Two vectors of 8 lanes as one of 16 and back, in registers (a round trip through memory
// stalls: a wide load does not forward from two narrow stores).
FASTACT_HOST_DEVICE Float16Lanes join_halves(const Float8& low, const Float8& high) {
  return __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
template <typename V16>
FASTACT_HOST_DEVICE auto low_half(const V16& v) {
  return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
}
template <typename V16>
FASTACT_HOST_DEVICE auto high_half(const V16& v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}

// sin y and the versine 1 - cos y of the reduced angle y = x - q pi/2, and the quadrant q (mod
// 4 in its low bits), for vectors F of floats (I: their bits).
template <typename F, typename I>
struct ReducedSinCosFloat {
  F sin_y;
  F versine_y;
  I quadrant;
};

template <typename F, typename I>
FASTACT_HOST_DEVICE ReducedSinCosFloat<F, I> reduced_sincos_float(const F& x) {
  const F shifted = x * 0.636619772367581343f + 0x1.8p23f;
  const F j = shifted - 0x1.8p23f;
  I bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  const F y = ((x - j * 1.5703125f) - j * 4.837512969970703125e-4f) - j * 7.54978995489188216e-8f;
  const F z = y * y;
  // Cephes sinf and cosf on [-pi/4, pi/4]; cos y = 1 - versine.
  return {y + y * z * polynomial(z, kCephesSinFloat),
          0.5f * z - z * z * polynomial(z, kCephesCosFloat), bits & 3};
}

FASTACT_HOST_DEVICE SinCosFloat8 sincos_float8(const Float8& x) {
  const ReducedSinCosFloat<Float8, Int8> r = reduced_sincos_float<Float8, Int8>(x);
  return in_quadrant<8>(widen(r.sin_y), 1.0 - widen(r.versine_y), widen(r.quadrant));
}

// sin and cos of 16 angles in float (in_quadrant on float lanes): for the 16-bit dtypes, whose
// results are rounded to 16 bits, so that the versine need not be carried to double.
FASTACT_HOST_DEVICE SinCos<Float16Lanes> sincos_float16_lanes(const Float16Lanes& x) {
  const ReducedSinCosFloat<Float16Lanes, Int16Lanes> r =
      reduced_sincos_float<Float16Lanes, Int16Lanes>(x);
  const Float16Lanes cos_y = 1.0f - r.versine_y;
  const auto swap = (r.quadrant & 1) != 0;
  Float16Lanes sin_x = swap ? cos_y : r.sin_y;
  Float16Lanes cos_x = swap ? r.sin_y : cos_y;
  Int16Lanes sin_bits, cos_bits;
  std::memcpy(&sin_bits, &sin_x, sizeof(sin_bits));
  std::memcpy(&cos_bits, &cos_x, sizeof(cos_bits));
  sin_bits ^= (r.quadrant & 2) << 30;
  cos_bits ^= ((r.quadrant + 1) & 2) << 30;
  std::memcpy(&sin_x, &sin_bits, sizeof(sin_x));
  std::memcpy(&cos_x, &cos_bits, sizeof(cos_x));
  return {sin_x, cos_x};
}

// 8 rows x 8 columns in place: v[r][j] -> v[j][r] (three rounds of shuffles, 24 in all).
FASTACT_HOST_DEVICE void transpose_8x8(Float8* v) {
  Float8 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], Int8{0, 8, 1, 9, 4, 12, 5, 13});
    t[2 * i + 1] = __builtin_shuffle(v[2 * i], v[2 * i + 1], Int8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 2; ++i) {
    for (int h = 0; h < 2; ++h) {
      const Float8& a = t[4 * i + h];
      const Float8& b = t[4 * i + 2 + h];
      u[4 * i + 2 * h] = __builtin_shuffle(a, b, Int8{0, 1, 8, 9, 4, 5, 12, 13});
      u[4 * i + 2 * h + 1] = __builtin_shuffle(a, b, Int8{2, 3, 10, 11, 6, 7, 14, 15});
    }
  }
  for (int j = 0; j < 4; ++j) {
    v[j] = __builtin_shuffle(u[j], u[4 + j], Int8{0, 1, 2, 3, 8, 9, 10, 11});
    v[4 + j] = __builtin_shuffle(u[j], u[4 + j], Int8{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// 8 doubles as 8 floats (each rounded once).
FASTACT_HOST_DEVICE Float8 narrow(const Lanes<8>::Value& v) {
  return __builtin_convertvector(v, Float8);
}

}  // namespace fastact::cpu

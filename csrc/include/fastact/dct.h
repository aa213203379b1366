// DCT-basis activation (ENN): a learnable cosine series per channel,
//   y = sum_j F_j cos(pi k_j t),  t = (x - lo) / (hi - lo) = x * scale + offset,
// with k_j = 2j + 1 ("odd" frequencies, the ENN basis) or k_j = j ("all").
//
// Cost per element: one polynomial sin/cos and a two-operation recurrence per term, never a
// transcendental call per term. The phase is reduced by symmetries that are exact in floating
// point, so that the recurrence always steps by an angle in [0, pi/2]:
//   - t = m + d with m = rint(t), |d| <= 1/2: cos(pi k t) = (-1)^(k m) cos(pi k |d|) and
//     sin(pi k t) = (-1)^(k m) sign(d) sin(pi k |d|);
//   - odd k only, for r = |d| > 1/4: cos(pi k (1/2 - q)) = (-1)^j sin(pi k q) (and sin <-> cos),
//     so that the step 2 pi q stays <= pi/2.
// The terms then follow Reinsch's form of the Chebyshev recurrence,
//   D_j = D_{j-1} + lambda e_j,   e_{j+1} = e_j + D_j,   lambda = 2 (cos(step) - 1) = -4 sin^2(step / 2),
// whose rounding error grows linearly in j for steps in [0, pi/2]; the three-term form
// e_{j+1} = 2 cos(step) e_j - e_{j-1} loses accuracy like j^2 as the step nears 0 or pi
// (x near the domain edges and, for the odd basis, its middle). The backward needs every term
// (dct_point); the forward only their sum (dct_sum, below).
#pragma once

#include <utility>

#include "fastact/primitives.h"

namespace fastact {

// sin(pi q) and cos(pi q) for q in [0, 1/4] (|pi q| <= pi/4): polynomials in q^2, near-minimax
// for the relative error on the interval (weighted least squares iterated towards equal
// ripple, in 60-digit arithmetic), with cos(0) = 1 exactly. Their own error is below
// 3.3e-9 (float: sin q (4 terms), cos 5 terms) and 3.4e-18 (double: 7 and 8 terms) relative,
// under half an ulp, so the result is good to about one rounding per operation.
template <typename T>
FASTACT_HOST_DEVICE void sincospi_quarter(T q, T& sin_value, T& cos_value) {
  const T q2 = q * q;
  T s, c;
  if constexpr (sizeof(lane_t<T>) == 8) {
    s = T(0x1.e3eed5ca3247ep-12);
    s = mul_add(s, q2, T(-0x1.e30063a01d33fp-8));
    s = mul_add(s, q2, T(0x1.50782fca38aacp-4));
    s = mul_add(s, q2, T(-0x1.32d2cce2d535fp-1));
    s = mul_add(s, q2, T(0x1.466bc67758700p+1));
    s = mul_add(s, q2, T(-0x1.4abbce625be41p+2));
    s = mul_add(s, q2, T(0x1.921fb54442d18p+1));
    c = T(-0x1.b263c2807b052p-14);
    c = mul_add(c, q2, T(0x1.f9cc40a9c4aecp-10));
    c = mul_add(c, q2, T(-0x1.a6d1ec7e074dbp-6));
    c = mul_add(c, q2, T(0x1.e1f5068367abdp-3));
    c = mul_add(c, q2, T(-0x1.55d3c7e3c9280p+0));
    c = mul_add(c, q2, T(0x1.03c1f081b5aaep+2));
    c = mul_add(c, q2, T(-0x1.3bd3cc9be45dep+2));
    c = mul_add(c, q2, T(0x1.0000000000000p+0));
  } else {
    s = T(-0x1.2d93020f8ef45p-1);
    s = mul_add(s, q2, T(0x1.465e91edb88dfp+1));
    s = mul_add(s, q2, T(-0x1.4abbb900384bap+2));
    s = mul_add(s, q2, T(0x1.921fb52e6a14ep+1));
    c = T(0x1.d9d57b00c1358p-3);
    c = mul_add(c, q2, T(-0x1.55c5dfb0099aap+0));
    c = mul_add(c, q2, T(0x1.03c1dd95f824ap+2));
    c = mul_add(c, q2, T(-0x1.3bd3cc7b834e6p+2));
    c = mul_add(c, q2, T(0x1.0000000000000p+0));
  }
  sin_value = s * q;
  cos_value = c;
}

// Everything the K terms of one element need, from one sin/cos:
//   cos(pi k_j t) = (j even ? cos_sign_even : cos_sign_odd) * c_j,
//   sin(pi k_j t) = (j even ? sin_sign_even : sin_sign_odd) * s_j,
// where c_j and s_j run the recurrence (dct_advance) from (cos_first, cos_difference) and
// (sin_first, sin_difference); the differences are D_{-1} = e_0 - e_{-1}.
// slope is 1 where y depends on x and 0 where boundary="clamp" holds t at 0 or 1 (x outside
// the domain, or NaN as torch.clamp's gradient gives).
template <typename T>
struct DctPoint {
  T lambda;
  T cos_first, cos_difference, sin_first, sin_difference;
  T cos_sign_even, cos_sign_odd, sin_sign_even, sin_sign_odd;
  T slope;
};

// The phase reduction of the top, shared by dct_point and dct_sum: t = m + d with m = rint(t),
// r = |d| <= 1/2, and sin / cos of pi q, the angle the recurrence steps from:
//  - odd: the step is 2 pi r; past r = 1/4 (mirrored) q = 1/2 - r keeps it <= pi/2, else q = r;
//  - all: the step is pi r itself, and q = r / 2 gives sin/cos of half of it.
template <typename T>
struct DctPhase {
  T parity;                                                  // (-1)^m
  T sign;                                                    // sign(d), +1 for d = 0
  decltype(std::declval<T>() > std::declval<T>()) mirrored;  // r > 1/4 (the odd basis only)
  T s, c;                                                    // sin(pi q), cos(pi q)
};

// t = x * scale + offset, clamped to [0, 1] when `clamp` (selects: NaN passes).
template <typename T>
FASTACT_HOST_DEVICE T dct_clamp(T t) {
  return select(t < T(0), T(0), select(t > T(1), T(1), t));
}

template <typename T>
FASTACT_HOST_DEVICE DctPhase<T> dct_phase(T t, bool odd) {
  const T m = round_to_integer(t);
  const T d = t - m;  // exact (Sterbenz), as are 1/2 - r and r / 2 below
  const T r = magnitude(d);
  const T half_m = m * T(0.5);
  DctPhase<T> phase;
  phase.parity = select(round_to_integer(half_m) != half_m, T(-1), T(1));
  phase.sign = select(d < T(0), T(-1), T(1));
  phase.mirrored = r > T(0.25);
  const T q = odd ? select(phase.mirrored, T(0.5) - r, r) : r * T(0.5);
  sincospi_quarter(q, phase.s, phase.c);
  return phase;
}

// Selects, not branches, so that T may be a vector pack (as for dct_sum).
template <typename T>
FASTACT_HOST_DEVICE DctPoint<T> dct_point(T x, T scale, T offset, bool odd, bool clamp) {
  const T t = mul_add(x, scale, offset);
  const auto inside = (t >= T(0)) & (t <= T(1));  // & not &&: no branch
  const DctPhase<T> phase = dct_phase(clamp ? dct_clamp(t) : t, odd);
  const T s = phase.s, c = phase.c, parity = phase.parity, sign_d = phase.sign;

  DctPoint<T> p;
  p.lambda = T(-4) * s * s;
  p.slope = clamp ? select(inside, T(1), T(0)) : T(1);
  if (odd) {
    // cos((2j+1) pi q) starts at (c, D = 0), sin((2j+1) pi q) at (s, D = 2s); mirrored, the two
    // swap roles and alternate in sign. (-1)^(k m) = (-1)^m for odd k.
    const auto mirrored = phase.mirrored;
    p.cos_first = select(mirrored, s, c);
    p.cos_difference = select(mirrored, T(2) * s, T(0));
    p.sin_first = select(mirrored, c, s);
    p.sin_difference = select(mirrored, T(0), T(2) * s);
    const T alternate = select(mirrored, T(-1), T(1));
    p.cos_sign_even = parity;
    p.cos_sign_odd = parity * alternate;
    p.sin_sign_even = parity * sign_d;
    p.sin_sign_odd = parity * sign_d * alternate;
  } else {
    // cos(j psi) starts at (1, D = 1 - cos psi = 2 s^2), sin(j psi) at (0, D = sin psi = 2 s c),
    // psi = pi r; (-1)^(j m) alternates with j when m is odd.
    p.cos_first = T(1) + T(0) * s;  // 1, or NaN for NaN x as cos(0 * NaN) is
    p.cos_difference = T(2) * s * s;
    p.sin_first = T(0) * s;
    p.sin_difference = T(2) * s * c;
    p.cos_sign_even = T(1);
    p.cos_sign_odd = parity;
    p.sin_sign_even = sign_d;
    p.sin_sign_odd = sign_d * parity;
  }
  return p;
}

// One step of the recurrence: e_j -> e_{j+1} (difference carries D_{j-1} -> D_j).
template <typename T>
FASTACT_HOST_DEVICE void dct_advance(T lambda, T& value, T& difference) {
  difference = mul_add(lambda, value, difference);
  value += difference;
}

// The forward needs cos(pi k_j t) only, and only their sum: Clenshaw's algorithm sums the
// series without forming any term, in Reinsch's form (three operations per term, the
// coefficient's product included; no sin, signs or even/odd sums; rounding error growing like
// j as in dct_advance):
//   d_j = d_{j+1} + G_j + lambda b_{j+1},   b_j = b_{j+1} + d_j,   (d_K = b_K = 0)
//   y = scale * (d_0 + tail * b_1),   G_j = (j odd ? flip : 1) * F_j.
// The phase is reduced by dct_phase, as for dct_point, so that lambda = -4 sin^2(pi q),
// q in [0, 1/4], stays in [-2, 0]: Reinsch's form is accurate there, while the plain three-term form
// (b_j = F_j + 2 w b_{j+1} - b_{j+2}) loses ~k^2 u near w = +-1 (x at the domain edges and,
// for the odd basis, its middle): up to 3.6x the tests' bounds (float32, K = 16, measured).
//  - odd: sum_j F_j cos((2j + 1) theta), theta = pi r, is cos(theta) (b_0 - b_1) for the
//    recurrence in cos(2 theta); past r = 1/4 the mirror image q = 1/2 - r turns it into
//    sum_j (-1)^j F_j sin((2j + 1) pi q) = sin(pi q) (b_0 + b_1) = sin(pi q) (d_0 + 2 b_1).
//  - all: sum_j F_j cos(j psi), psi = pi r = 2 pi q, is b_0 - cos(psi) b_1 = d_0 - lambda / 2 b_1;
//    (-1)^(j m) alternates the coefficients' signs when m is odd.
template <typename T>
struct DctSum {
  T lambda, flip, scale, tail;
};

template <typename T>
FASTACT_HOST_DEVICE DctSum<T> dct_sum(T x, T scale, T offset, bool odd, bool clamp) {
  const T t = mul_add(x, scale, offset);
  const DctPhase<T> phase = dct_phase(clamp ? dct_clamp(t) : t, odd);
  const T s = phase.s, c = phase.c;
  DctSum<T> sum;
  sum.lambda = T(-4) * s * s;
  if (odd) {
    sum.flip = select(phase.mirrored, T(-1), T(1));
    sum.scale = phase.parity * select(phase.mirrored, s, c);  // (-1)^(k m) = (-1)^m for odd k
    sum.tail = select(phase.mirrored, T(2), T(0));
  } else {
    sum.flip = phase.parity;
    sum.scale = T(1);
    sum.tail = T(2) * s * s;  // NaN for NaN x, through lambda too
  }
  return sum;
}

// Step j of the sum: (d, b) = (d_{j+1}, b_{j+1}) -> (d_j, b_j); coeff is G_j.
template <typename T>
FASTACT_HOST_DEVICE void dct_sum_step(T lambda, T coeff, T& d, T& b) {
  d = mul_add(lambda, b, d + coeff);
  b += d;
}

// y from d_0 (d after step 0, whose b is not needed) and b_1 (b after step 1; 0 for K = 1).
template <typename T>
FASTACT_HOST_DEVICE T dct_sum_value(const DctSum<T>& sum, T d0, T b1) {
  return sum.scale * mul_add(sum.tail, b1, d0);
}

// y = sum_j F_j cos(pi k_j t), F_j = coeff(j), one element at a time.
template <typename T, typename Coeff>
FASTACT_HOST_DEVICE T dct_value(T x, T scale, T offset, bool odd, bool clamp, int num_coeffs,
                                Coeff coeff) {
  const DctSum<T> sum = dct_sum(x, scale, offset, odd, clamp);
  T d = T(0), b = T(0);
  for (int j = num_coeffs - 1; j >= 1; --j) {
    dct_sum_step(sum.lambda, (j % 2 == 1 ? sum.flip : T(1)) * coeff(j), d, b);
  }
  const T b1 = b;
  dct_sum_step(sum.lambda, coeff(0), d, b);
  return dct_sum_value(sum, d, b1);
}

}  // namespace fastact

// DCT-basis activation CPU kernels, what one vector register or lane block of elements
// computes (dct_kernel.h runs them over the tasks); compiled once per instruction set by
// csrc/cpu/isa_*.cpp.
//
// Forward: runs of elements go one vector register (Pack) at a time through dct_sum, its K
// steps and its value, straight-line code whose state never leaves the registers; the
// out-of-order core overlaps consecutive packs. The coefficients of term j are one vector
// load (lanes across channels) or one broadcast (lanes along a channel).
// Backward: lane blocks of V elements (256 bytes of the compute type: four AVX-512 or eight
// AVX2 registers), converted from 16-bit types as a whole, then run a few packs at a time
// through dct_point and the K terms, term-outer, pack-inner, in registers: the independent
// recurrences of the packs (and of consecutive blocks, in the out-of-order core) hide the
// latency of each step. A partial block (n < V) is padded with zeros, which add nothing to the
// coefficient gradients.
#pragma once

#include <type_traits>

#include "cpu/dct_tasks.h"
#include "cpu/elementwise.h"
#include "cpu/storage.h"
#include "fastact/dct.h"

namespace fastact::cpu::FASTACT_ISA {
namespace dct {

// A lane block is a function of its own: inlined into the task loops, GCC 12 sometimes
// leaves the per-element selects as branches and the block unvectorised. (Its symbol is in
// this instruction set's namespace, so the copies never merge.)
#define FASTACT_LANE_BLOCK __attribute__((noinline))

#ifndef FASTACT_ISA_VECTOR_BYTES
#define FASTACT_ISA_VECTOR_BYTES 16  // SSE2 / the baseline
#endif

template <typename T>
constexpr int lanes() {
  return sizeof(T) == 8 ? int(kDctLanesDouble) : int(kDctLanesFloat);
}

// t = x * scale + offset; the basis and boundary are template parameters (kOdd, kClamp) so
// that the per-element code has no branches left and vectorises.
template <typename T>
struct Domain {
  T scale, offset;
};

// A lane block's n <= V elements in the compute type, zero padded. Whole float/double blocks
// are plain vector moves (a bulk conversion would call memcpy for them); 16-bit types go
// through the bulk conversions of elementwise.h (F16C where the instruction set has it).
template <typename S, typename T, int V>
FASTACT_HOST_DEVICE void load_lanes(const S* src, int n, T* dst) {
  if constexpr (std::is_same_v<S, T>) {
    if (n == V) {
#pragma omp simd
      for (int l = 0; l < V; ++l) dst[l] = src[l];
      return;
    }
  }
  load_chunk(src, dst, n);
  for (int l = n; l < V; ++l) dst[l] = T(0);
}

template <typename S, typename T, int V>
FASTACT_HOST_DEVICE void store_lanes(const T* src, int n, S* dst) {
  if constexpr (std::is_same_v<S, T>) {
    if (n == V) {
#pragma omp simd
      for (int l = 0; l < V; ++l) dst[l] = src[l];
      return;
    }
  }
  store_chunk(src, dst, n);
}

// The coefficient of lane l in a table row: its own (lanes across channels) or the row's
// single value (lanes along one channel).
template <bool kLanesAreChannels, typename T>
FASTACT_HOST_DEVICE T lane_coeff(const T* row, int l) {
  return kLanesAreChannels ? row[l] : row[0];
}

typedef float VecFloat __attribute__((vector_size(FASTACT_ISA_VECTOR_BYTES)));
typedef double VecDouble __attribute__((vector_size(FASTACT_ISA_VECTOR_BYTES)));

// One vector register of T: the lanes of the forward, which runs dct_sum and its steps on whole
// packs so that each element's state stays in registers from its set-up to its value (as lane
// arrays between `omp simd` loops it went through the stack every step).
template <typename T>
struct Pack {
  using lane_type = T;
  using Vec = std::conditional_t<sizeof(T) == 8, VecDouble, VecFloat>;
  using Bits = decltype(Vec{} < Vec{});  // lanes of all ones or zeros; also T's bits
  static constexpr int kLanes = FASTACT_ISA_VECTOR_BYTES / sizeof(T);
  Vec v;

  Pack() = default;
  FASTACT_HOST_DEVICE Pack(T value) : v(value - Vec{}) {}  // every lane (x - 0 is x)
  FASTACT_HOST_DEVICE explicit Pack(Vec lanes) : v(lanes) {}
  static FASTACT_HOST_DEVICE Pack load(const T* p) {
    Pack r;
    __builtin_memcpy(&r.v, p, sizeof(Vec));
    return r;
  }
  FASTACT_HOST_DEVICE void store(T* p) const { __builtin_memcpy(p, &v, sizeof(Vec)); }

  friend FASTACT_HOST_DEVICE Pack operator+(Pack a, Pack b) { return Pack(a.v + b.v); }
  friend FASTACT_HOST_DEVICE Pack operator-(Pack a, Pack b) { return Pack(a.v - b.v); }
  friend FASTACT_HOST_DEVICE Pack operator*(Pack a, Pack b) { return Pack(a.v * b.v); }
  friend FASTACT_HOST_DEVICE Pack operator-(Pack a) { return Pack(-a.v); }
  FASTACT_HOST_DEVICE Pack& operator+=(Pack b) { return *this = *this + b; }
  friend FASTACT_HOST_DEVICE Bits operator<(Pack a, Pack b) { return a.v < b.v; }
  friend FASTACT_HOST_DEVICE Bits operator>(Pack a, Pack b) { return a.v > b.v; }
  friend FASTACT_HOST_DEVICE Bits operator<=(Pack a, Pack b) { return a.v <= b.v; }
  friend FASTACT_HOST_DEVICE Bits operator>=(Pack a, Pack b) { return a.v >= b.v; }
  friend FASTACT_HOST_DEVICE Bits operator!=(Pack a, Pack b) { return a.v != b.v; }

  // The formula's primitives (dct.h), found by argument-dependent lookup.
  friend FASTACT_HOST_DEVICE Pack select(Bits condition, Pack a, Pack b) {
    return Pack(condition ? a.v : b.v);
  }
  friend FASTACT_HOST_DEVICE Pack mul_add(Pack a, Pack b, Pack c) { return Pack(a.v * b.v + c.v); }
  friend FASTACT_HOST_DEVICE Pack magnitude(Pack a) {
    return Pack(Vec(Bits(a.v) & ~Bits(T(-0.0) - Vec{})));  // clear the sign bits
  }
  friend FASTACT_HOST_DEVICE Pack round_to_integer(Pack a) {
#if defined(FASTACT_ISA_HAS_ROUND) && FASTACT_ISA_VECTOR_BYTES == 64
    // The masked forms: the plain ones start from _mm512_undefined_*, which GCC 12 warns about.
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    if constexpr (sizeof(T) == 8) return Pack(Vec(_mm512_mask_roundscale_pd(a.v, 0xff, a.v, kNearest)));
    else return Pack(Vec(_mm512_mask_roundscale_ps(a.v, 0xffff, a.v, kNearest)));
#elif defined(FASTACT_ISA_HAS_ROUND) && FASTACT_ISA_VECTOR_BYTES == 32
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    if constexpr (sizeof(T) == 8) return Pack(Vec(_mm256_round_pd(a.v, kNearest)));
    else return Pack(Vec(_mm256_round_ps(a.v, kNearest)));
#else
    // As the scalar round_to_integer without a round instruction: +-2^23 (2^52) and back.
    const Pack big(sizeof(T) == 8 ? T(4503599627370496.0) : T(8388608.0));
    const Pack shift = select(a < Pack(T(0)), -big, big);
    return select(magnitude(a) < big, (a + shift) - shift, a);
#endif
  }
};

// The coefficients of term j for a pack: its lanes' own (lanes across channels, `row` at the
// pack's first lane) or the row's single value.
template <bool kLanesAreChannels, typename T>
FASTACT_HOST_DEVICE Pack<T> pack_coeff(const T* row) {
  return kLanesAreChannels ? Pack<T>::load(row) : Pack<T>(row[0]);
}

// y[p] = sum_j F_j cos(pi k_j t) for N consecutive packs x[p] (dct_sum: Clenshaw's sum, terms
// from K - 1 down to 0); F_j of pack p is pack_coeff(coeffs + p * kLanes + j * coeff_step) with
// lanes across channels, else the one value of coeffs + j * coeff_step. The N sums run side by
// side: each is a chain of dependent steps, and N of them keep the vector units busy.
template <int N, bool kLanesAreChannels, bool kOdd, bool kClamp, typename T>
FASTACT_HOST_DEVICE void forward_packs(const Pack<T>* x, Pack<T>* y, const T* coeffs,
                                       int64_t coeff_step, int64_t num_coeffs, Pack<T> scale,
                                       Pack<T> offset) {
  using P = Pack<T>;
  DctSum<P> s[N];
  P d[N], b[N], b1[N];
#pragma GCC unroll 4
  for (int p = 0; p < N; ++p) s[p] = dct_sum(x[p], scale, offset, kOdd, kClamp);
  auto coeff = [&](int p, int64_t j) {
    return pack_coeff<kLanesAreChannels>(coeffs + (kLanesAreChannels ? p * P::kLanes : 0) +
                                         j * coeff_step);
  };
  auto step = [&](int64_t j, bool flipped) {
#pragma GCC unroll 4
    for (int p = 0; p < N; ++p) {
      dct_sum_step(s[p].lambda, flipped ? coeff(p, j) * s[p].flip : coeff(p, j), d[p], b[p]);
    }
  };
  // Term K - 1 starts the sum: d = b = G_{K-1}.
  int64_t j = num_coeffs - 1;
#pragma GCC unroll 4
  for (int p = 0; p < N; ++p) {
    d[p] = j % 2 == 1 ? coeff(p, j) * s[p].flip : coeff(p, j);
    b[p] = d[p];
  }
  if (j == 0) {
#pragma GCC unroll 4
    for (int p = 0; p < N; ++p) y[p] = dct_sum_value(s[p], d[p], T(0) * s[p].lambda);  // NaN x
    return;
  }
  // Terms K - 2 .. 1, an even one first if need be and then pairs (odd, even), so that which
  // coefficients take the flip is known without a test per term.
  --j;
  if (j >= 2 && j % 2 == 0) step(j--, false);
  for (; j >= 3; j -= 2) {
    step(j, true);
    step(j - 1, false);
  }
  if (j == 1) step(1, true);
#pragma GCC unroll 4
  for (int p = 0; p < N; ++p) b1[p] = b[p];
  step(0, false);
#pragma GCC unroll 4
  for (int p = 0; p < N; ++p) y[p] = dct_sum_value(s[p], d[p], b1[p]);
}

// Packs the forward runs side by side: with 4, the step chains of the sums overlap enough to
// keep the FMA units busy (x1.2-1.5 over one at a time, AVX-512 and AVX2); 8 spill registers.
constexpr int kForwardPacks = 4;

// The forward of n consecutive elements: lanes across channels (coefficient column i for
// element i) or along one channel. Float and double are read and written in place, a partial
// pack through a zero-padded copy; 16-bit types are converted V elements at a time.
template <typename S, bool kLanesAreChannels, bool kOdd, bool kClamp>
FASTACT_LANE_BLOCK void forward_run(const S* x, S* y, int64_t n,
                                     const typename Storage<S>::acc_t* coeffs, int64_t coeff_step,
                                     int64_t num_coeffs,
                                     const Domain<typename Storage<S>::acc_t>& d) {
  using T = typename Storage<S>::acc_t;
  using P = Pack<T>;
  constexpr int W = P::kLanes;
  const P scale(d.scale), offset(d.offset);
  // The packs of a run of T in memory at `in`, `out`: kForwardPacks at a time, then one at a
  // time.
  auto run_packs = [&](const T* in, T* out, int64_t count, int64_t first) {
    int64_t i = 0;
    for (; i + kForwardPacks * W <= count; i += kForwardPacks * W) {
      P xs[kForwardPacks], ys[kForwardPacks];
#pragma GCC unroll 4
      for (int p = 0; p < kForwardPacks; ++p) xs[p] = P::load(in + i + p * W);
      forward_packs<kForwardPacks, kLanesAreChannels, kOdd, kClamp>(
          xs, ys, kLanesAreChannels ? coeffs + first + i : coeffs, coeff_step, num_coeffs, scale,
          offset);
#pragma GCC unroll 4
      for (int p = 0; p < kForwardPacks; ++p) ys[p].store(out + i + p * W);
    }
    for (; i < count; i += W) {
      P y;
      const P x = P::load(in + i);
      forward_packs<1, kLanesAreChannels, kOdd, kClamp>(
          &x, &y, kLanesAreChannels ? coeffs + first + i : coeffs, coeff_step, num_coeffs, scale,
          offset);
      y.store(out + i);
    }
  };
  if constexpr (std::is_same_v<S, T>) {
    const int64_t whole = n / W * W;
    run_packs(x, y, whole, 0);
    if (whole < n) {
      T buffer[W];
      for (int l = 0; l < W; ++l) buffer[l] = whole + l < n ? x[whole + l] : T(0);
      run_packs(buffer, buffer, W, whole);
      for (int64_t l = 0; l < n - whole; ++l) y[whole + l] = buffer[l];
    }
  } else {
    constexpr int V = lanes<T>();
    static_assert(V % W == 0);
    T buffer[V];
    for (int64_t at = 0; at < n; at += V) {
      const int chunk = int(n - at < V ? n - at : V);
      load_chunk(x + at, buffer, chunk);
      for (int l = chunk; l < V; ++l) buffer[l] = T(0);
      run_packs(buffer, buffer, V, at);
      store_chunk(buffer, y + at, chunk);
    }
  }
}

// Packs the backward side by side: each pack carries nine values through the K terms (the
// recurrences of sin and cos, their weights and the two grad_x sums) and four to its end, so
// that two AVX-512 packs fit the 32 registers; AVX2 and SSE2 have 16.
constexpr int kBackwardPacks = FASTACT_ISA_VECTOR_BYTES == 64 ? 2 : 1;

// The backward of n <= V elements: grad_x = grad * sum_j G_j sin(pi k_j t) (G_j of lane l is
// lane_coeff(slopes + j * coeff_step, l)), and acc[j * acc_step + l] += grad * cos(pi k_j t).
// Whole packs, kBackwardPacks at a time, from dct_point through the K terms to grad_x, their
// state in registers throughout (as the forward's).
template <typename S, bool kLanesAreChannels, bool kOdd, bool kClamp, bool kGradX, bool kGradCoeffs>
FASTACT_LANE_BLOCK void backward_lanes(const S* grad, const S* x, S* grad_x, int n,
                                        const typename Storage<S>::acc_t* slopes,
                                        int64_t coeff_step, typename Storage<S>::acc_t* acc,
                                        int64_t acc_step, int64_t num_coeffs,
                                        const Domain<typename Storage<S>::acc_t>& d) {
  using T = typename Storage<S>::acc_t;
  using P = Pack<T>;
  constexpr int V = lanes<T>();
  constexpr int W = P::kLanes;
  constexpr int N = kBackwardPacks;
  static_assert(V % (N * W) == 0);
  T xs[V], gs[V], out[V];
  load_lanes<S, T, V>(x, n, xs);
  load_lanes<S, T, V>(grad, n, gs);
  const P scale(d.scale), offset(d.offset);
  for (int first = 0; first < V; first += N * W) {
    P lambda[N], cos_value[N], cos_difference[N], weight_even[N], weight_odd[N];
    P sin_value[N], sin_difference[N], slope_even[N], slope_odd[N];
    P g[N], sin_sign_even[N], sin_sign_odd[N], flows[N];
#pragma GCC unroll 4
    for (int p = 0; p < N; ++p) {
      const DctPoint<P> point =
          dct_point(P::load(xs + first + p * W), scale, offset, kOdd, kClamp);
      g[p] = P::load(gs + first + p * W);
      lambda[p] = point.lambda;
      cos_value[p] = point.cos_first;
      cos_difference[p] = point.cos_difference;
      weight_even[p] = g[p] * point.cos_sign_even;
      weight_odd[p] = g[p] * point.cos_sign_odd;
      sin_value[p] = point.sin_first;
      sin_difference[p] = point.sin_difference;
      sin_sign_even[p] = point.sin_sign_even;
      sin_sign_odd[p] = point.sin_sign_odd;
      flows[p] = point.slope;
      slope_even[p] = P(T(0));
      slope_odd[p] = P(T(0));
    }
    auto coeff = [&](int p, int64_t j) {
      return pack_coeff<kLanesAreChannels>(slopes + (kLanesAreChannels ? first + p * W : 0) +
                                           j * coeff_step);
    };
    auto accumulate = [&](int p, int64_t j, P weight) {
      T* sum = acc + j * acc_step + first + p * W;
      mul_add(weight, cos_value[p], P::load(sum)).store(sum);
    };
    int64_t j = 0;
    for (; j + 1 < num_coeffs; j += 2) {
#pragma GCC unroll 4
      for (int p = 0; p < N; ++p) {
        if constexpr (kGradX) {
          slope_even[p] = mul_add(coeff(p, j), sin_value[p], slope_even[p]);
          dct_advance(lambda[p], sin_value[p], sin_difference[p]);
          slope_odd[p] = mul_add(coeff(p, j + 1), sin_value[p], slope_odd[p]);
          dct_advance(lambda[p], sin_value[p], sin_difference[p]);
        }
        if constexpr (kGradCoeffs) {
          accumulate(p, j, weight_even[p]);
          dct_advance(lambda[p], cos_value[p], cos_difference[p]);
          accumulate(p, j + 1, weight_odd[p]);
          dct_advance(lambda[p], cos_value[p], cos_difference[p]);
        }
      }
    }
    if (j < num_coeffs) {
#pragma GCC unroll 4
      for (int p = 0; p < N; ++p) {
        if constexpr (kGradX) slope_even[p] = mul_add(coeff(p, j), sin_value[p], slope_even[p]);
        if constexpr (kGradCoeffs) accumulate(p, j, weight_even[p]);
      }
    }
    if constexpr (kGradX) {
#pragma GCC unroll 4
      for (int p = 0; p < N; ++p) {
        const P value = g[p] * mul_add(sin_sign_even[p], slope_even[p],
                                       sin_sign_odd[p] * slope_odd[p]);
        // A select: clamp's zero gradient stays 0 where the sum is NaN.
        select(flows[p] != P(T(0)), value, P(T(0))).store(out + first + p * W);
      }
    }
  }
  if constexpr (kGradX) store_lanes<S, T, V>(out, n, grad_x);
}

}  // namespace dct
}  // namespace fastact::cpu::FASTACT_ISA

// The arithmetic primitives that formulas for a scalar T (CUDA, Triton's mirror, the CPU
// backward) and for the CPU kernels' vector packs (cpu/dct_lanes.h) are written in: the packs
// bring their own overloads of select, mul_add, round_to_integer and magnitude and name their
// lanes' type as lane_type.
//
// Include it only from formula headers that kernels include: round_to_integer chooses its
// instructions by FASTACT_ISA_HAS_ROUND, which csrc/cpu/isa_<name>.cpp defines after the
// headers compiled for the baseline (csrc/cpu/storage.h and what it includes).
#pragma once

#include <cmath>
#include <type_traits>

#include "fastact/common.h"

namespace fastact {

template <typename T, typename = void>
struct LaneOf {
  using type = T;
};
template <typename T>
struct LaneOf<T, std::void_t<typename T::lane_type>> {
  using type = typename T::lane_type;
};
template <typename T>
using lane_t = typename LaneOf<T>::type;

// condition ? a : b, elementwise for the packs.
template <typename T>
FASTACT_HOST_DEVICE T select(bool condition, T a, T b) {
  return condition ? a : b;
}

// a * b + c: one fused rounding on CUDA; on the CPU the compiler contracts it to an FMA where
// the instruction set has one (the avx2 kernels) and leaves two roundings elsewhere. Either
// way the error analyses of the formulas (fastact/dct.h) hold.
template <typename T>
FASTACT_HOST_DEVICE T mul_add(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

// The integer nearest to v (ties to even); NaN and inf pass through. Where the CPU kernels'
// instruction set has a vector round instruction (FASTACT_ISA_HAS_ROUND, SSE4.1 on), std::rint
// compiles to it. Elsewhere, branch-free so that it vectorises: adding and subtracting 2^23
// (2^52 for double) rounds away the fraction of any |v| < 2^23, and a larger |v| is an integer
// already.
template <typename T>
FASTACT_HOST_DEVICE T round_to_integer(T v) {
#if defined(__CUDA_ARCH__)
  return rint(v);
#elif defined(FASTACT_ISA_HAS_ROUND)
  return std::rint(v);
#else
  const T big = sizeof(T) == 8 ? T(4503599627370496.0) : T(8388608.0);
  const T shift = v < T(0) ? -big : big;
  const T rounded = (v + shift) - shift;
  return abs_value(v) < big ? rounded : v;
#endif
}

// |v| with one bit operation (abs_value's select costs three).
template <typename T>
FASTACT_HOST_DEVICE T magnitude(T v) {
#if defined(__CUDA_ARCH__)
  return fabs(v);
#else
  return std::fabs(v);
#endif
}

}  // namespace fastact

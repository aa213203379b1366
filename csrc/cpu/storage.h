// How the CPU kernels read and write each dtype, computing in float (double for double).
//
// float16 and bfloat16 are handled as raw bits with branch-free conversions of our own:
// c10::Half's inline conversions would be compiled under several instruction sets
// (see isa.h) and could be merged by the linker, and these vectorise on every one.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>

#include "fastact/common.h"

namespace fastact::cpu {

struct Float16Bits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};

FASTACT_HOST_DEVICE float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

FASTACT_HOST_DEVICE uint32_t bits_from_float(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Storage<S>: the compute type of storage type S, and exact conversions both ways
// (round to nearest even on the way down, NaN kept NaN).
template <typename S>
struct Storage {
  using acc_t = S;  // float and double compute in themselves
  static FASTACT_HOST_DEVICE acc_t load(S v) { return v; }
  static FASTACT_HOST_DEVICE S store(acc_t v) { return v; }
};

template <>
struct Storage<BFloat16Bits> {
  using acc_t = float;
  static FASTACT_HOST_DEVICE float load(BFloat16Bits v) {
    return float_from_bits(uint32_t(v.bits) << 16);
  }
  static FASTACT_HOST_DEVICE BFloat16Bits store(float f) {
    const uint32_t u = bits_from_float(f);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return BFloat16Bits{uint16_t(f != f ? 0x7FC0u : rounded)};
  }
};

// IEEE half <-> float after Maratea's branch-free FP16 library (also used by c10).
template <>
struct Storage<Float16Bits> {
  using acc_t = float;
  static FASTACT_HOST_DEVICE float load(Float16Bits v) {
    const uint32_t w = uint32_t(v.bits) << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = float_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = float_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t magnitude =
        two_w < (1u << 27) ? bits_from_float(denormalized) : bits_from_float(normalized);
    return float_from_bits(sign | magnitude);
  }
  static FASTACT_HOST_DEVICE Float16Bits store(float f) {
    float base = (abs_value(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = bits_from_float(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    bias = bias < 0x71000000u ? 0x71000000u : bias;
    base = float_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = bits_from_float(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return Float16Bits{uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign))};
  }
};

// Calls fn(S{}) with S the storage type of dtype (one of the four float dtypes).
template <typename Fn>
FASTACT_HOST_DEVICE void dispatch_storage(c10::ScalarType dtype, Fn&& fn) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return fn(float{});
    case c10::ScalarType::Double:
      return fn(double{});
    case c10::ScalarType::Half:
      return fn(Float16Bits{});
    case c10::ScalarType::BFloat16:
      return fn(BFloat16Bits{});
    default:
      TORCH_CHECK(false, "fastact: unsupported dtype ", dtype);
  }
}

}  // namespace fastact::cpu

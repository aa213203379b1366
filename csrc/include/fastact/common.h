// Shared by every formula header: the function qualifiers that let one definition of
// each formula compile for the CPU kernels (once per instruction set) and for CUDA.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FASTACT_HOST_DEVICE __host__ __device__ __forceinline__
#else
// always_inline: the CPU kernels are compiled once per instruction set (csrc/cpu/isa_*.cpp);
// forcing inlining keeps each copy of a formula inside the kernel built for its instruction set,
// so the linker never merges an AVX2 copy into the portable path.
#define FASTACT_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace fastact {

// |x| written as a select so that it vectorises to a blend on every instruction set and
// keeps NaN (NaN < 0 is false).
template <typename T>
FASTACT_HOST_DEVICE T abs_value(T x) {
  return x < T(0) ? -x : x;
}

}  // namespace fastact

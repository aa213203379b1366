// Run-time choice of instruction set for the CPU kernels.
//
// Every kernel in csrc/cpu/*_kernel.h is compiled once per instruction set by the
// isa_<name>.cpp translation units, each copy in its own namespace fastact::cpu::<name> so
// the copies never collide. The ATen glue (csrc/cpu/<op>.cpp) calls <kernel>_for_this_cpu(),
// which returns the copy built for the best instruction set this CPU supports.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace fastact::cpu {

// To add an instruction set: an isa_<name>.cpp with its `#pragma GCC target`, an entry
// here, a line in FASTACT_DECLARE_CPU_KERNEL, and its CPU test in isa.cpp.
enum class Isa { portable, avx2, avx512 };

// The instruction set the kernels use: the best one the CPU supports, or the one named by
// the environment variable FASTACT_CPU_ISA ("portable", "avx2", "avx512") if the CPU supports it.
// Decided once, at the first call.
Isa active_isa();
const char* isa_name(Isa isa);

// A TensorIterator 2-D loop body over elements of one dtype: data[0] is the output,
// data[1..] the inputs; strides[0..ntensors) step along n0, strides[ntensors..) along n1.
using ElementwiseLoop = void(c10::ScalarType dtype, char** data, const int64_t* strides,
                             int64_t n0, int64_t n1);

}  // namespace fastact::cpu

// Declares `kernel`, of function type `type`, in every instruction-set namespace, and
// `kernel_for_this_cpu()` returning the copy to call.
#define FASTACT_DECLARE_CPU_KERNEL(type, kernel) \
  namespace fastact::cpu {                       \
  namespace portable {                           \
  type kernel;                                   \
  }                                              \
  namespace avx2 {                               \
  type kernel;                                   \
  }                                              \
  namespace avx512 {                             \
  type kernel;                                   \
  }                                              \
  inline type* kernel##_for_this_cpu() {         \
    switch (active_isa()) {                      \
      case Isa::avx2:                            \
        return &avx2::kernel;                    \
      case Isa::avx512:                          \
        return &avx512::kernel;                  \
      case Isa::portable:                        \
        break;                                   \
    }                                            \
    return &portable::kernel;                    \
  }                                              \
  }

#include "cpu/isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace fastact::cpu {
namespace {

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return true;
    case Isa::avx2:
#if defined(__x86_64__) || defined(__i386__)
      // The avx2 copy is compiled with AVX2, FMA and F16C (isa_avx2.cpp).
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
#else
      return false;
#endif
    case Isa::avx512:
#if defined(__x86_64__) || defined(__i386__)
      // The avx512 copy is compiled with AVX-512 F/VL/DQ/BW on top of avx2's (isa_avx512.cpp).
      return cpu_supports(Isa::avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw");
#else
      return false;
#endif
  }
  return false;
}

Isa choose_isa() {
  const char* requested = std::getenv("FASTACT_CPU_ISA");
  if (requested != nullptr && *requested != '\0') {
    for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512}) {
      if (std::strcmp(requested, isa_name(isa)) == 0) {
        if (cpu_supports(isa)) return isa;
        TORCH_WARN("fastact: FASTACT_CPU_ISA=", requested,
                   " is not supported by this CPU; using the portable kernels");
        return Isa::portable;
      }
    }
    TORCH_WARN("fastact: unknown FASTACT_CPU_ISA=", requested,
               " (expected \"portable\", \"avx2\" or \"avx512\"); choosing automatically");
  }
  for (Isa isa : {Isa::avx512, Isa::avx2}) {
    if (cpu_supports(isa)) return isa;
  }
  return Isa::portable;
}

}  // namespace

Isa active_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace fastact::cpu

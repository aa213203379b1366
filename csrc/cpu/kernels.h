// Every CPU kernel, for the instruction set of the including translation unit
// (isa_<name>.cpp defines FASTACT_ISA and its `#pragma GCC target` first).
#ifndef FASTACT_ISA
#error "csrc/cpu/kernels.h is included only by the csrc/cpu/isa_*.cpp translation units"
#endif

#include "cpu/dct_kernel.h"
#include "cpu/hat_kernel.h"
#include "cpu/layer_kernel.h"
#include "cpu/sphere_kernel.h"

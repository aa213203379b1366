// The CPU kernels for the compiler's baseline instruction set (SSE2 on x86-64): the
// fallback for every CPU.
#include "cpu/storage.h"

#define FASTACT_ISA portable
#include "cpu/kernels.h"

// The CPU kernels for AVX2 + FMA + F16C (x86-64 from 2013 on), chosen at run time by isa.cpp.
// The headers compiled for the baseline come first: the pragma applies only to what follows,
// so nothing but this file's kernels (namespace fastact::cpu::avx2) is built with AVX2.
#include "cpu/storage.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC target("avx2,fma,f16c")
// GCC does not define __F16C__ (or __SSE4_1__) for a target pragma: say it for the kernels.
#define FASTACT_ISA_HAS_F16C 1
#define FASTACT_ISA_HAS_ROUND 1  // SSE4.1's vector round instruction
#define FASTACT_ISA_VECTOR_BYTES 32  // the width of the kernels' vector packs
#endif

#define FASTACT_ISA avx2
#include "cpu/kernels.h"

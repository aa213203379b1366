// The CPU kernels for AVX-512 (F, VL, DQ, BW) on top of AVX2 + FMA + F16C (x86-64 server
// CPUs from 2017, AMD Zen 4 on), chosen at run time by isa.cpp. As in isa_avx2.cpp, the
// headers compiled for the baseline come first and only this file's kernels (namespace
// fastact::cpu::avx512) are built for the target. 512-bit vectors are preferred: twice the
// elements per instruction and 32 vector registers, which the compute-bound kernels (the DCT
// activation's recurrence) need to keep their state in registers.
#include "cpu/storage.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,prefer-vector-width=512")
// GCC does not define __F16C__ (or __SSE4_1__) for a target pragma: say it for the kernels.
#define FASTACT_ISA_HAS_F16C 1
#define FASTACT_ISA_HAS_ROUND 1  // SSE4.1's vector round instruction
#define FASTACT_ISA_VECTOR_BYTES 64  // the width of the kernels' vector packs
#endif

#define FASTACT_ISA avx512
#include "cpu/kernels.h"

// What every csrc/cuda source includes for the CUDA side: the runtime and ATen's CUDA context
// under nvcc, the SIMT emulator (csrc/emulator) on the host compiler (FASTACT_EMULATED_CUDA,
// the fastact._C_emulated module). Kernels launch with one macro in both builds:
//   FASTACT_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...);
// and register with FASTACT_CUDA_KERNELS(m) { ... } (torch.ops.fastact's CUDA kernels, or
// torch.ops.fastact_emulated's CPU kernels).
#pragma once

#include <torch/library.h>

#if defined(FASTACT_EMULATED_CUDA)
#include "emulator/aten_cuda.h"
#include "emulator/simt.h"
#define FASTACT_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(fastact_emulated, CPU, m)
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#define FASTACT_LAUNCH(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define FASTACT_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define FASTACT_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(fastact, CUDA, m)
#endif

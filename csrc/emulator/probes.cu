// Probe kernels of the SIMT emulator's own tests (tests/test_simt.py), in the CUDA dialect of
// csrc/cuda, built into fastact._C_emulated only: torch.ops.fastact_simt_probes.
#include <ATen/ATen.h>

#include "cuda/runtime.cuh"

namespace fastact::simt_probes {
namespace {

// Per thread of warps of 32: what each warp operation hands it, as doubles (see the test).
constexpr int kWarpResults = 8;

__global__ void warp_ops_kernel(const double* x, double* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x % 32;
  const double v = x[t];
  double* r = out + t * kWarpResults;
  r[0] = __shfl_sync(0xffffffffu, v, (lane + 3) % 32);
  r[1] = __shfl_up_sync(0xffffffffu, v, 5);
  r[2] = __shfl_down_sync(0xffffffffu, v, 5);
  r[3] = __shfl_xor_sync(0xffffffffu, v, 7);
  r[4] = __shfl_sync(0xffffffffu, v, 2, 8);  // lane 2 of each group of 8
  r[5] = double(__ballot_sync(0xffffffffu, v > 0));
  r[6] = __any_sync(0xffffffffu, v > 100);
  r[7] = __all_sync(0xffffffffu, v > -100);
  __syncwarp();
}

// Reverses each block's slice of x through shared memory; `synchronized` false drops the
// barrier between the writes and the reads (a race).
__global__ void block_reverse_kernel(const double* x, double* out, bool synchronized) {
  __shared__ double slots[256];
  const int t = threadIdx.x;
  const int base = blockIdx.x * blockDim.x;
  slots[t] = x[base + t];
  if (synchronized) __syncthreads();
  out[base + t] = slots[blockDim.x - 1 - t];
}

__global__ void dynamic_reverse_kernel(const double* x, double* out, int written) {
  FASTACT_DYNAMIC_SHARED(double, slots);
  const int t = threadIdx.x;
  const int base = blockIdx.x * blockDim.x;
  if (t < written) slots[t] = x[base + t];
  __syncthreads();
  out[base + t] = slots[blockDim.x - 1 - t];
}

// The position of each thread in the order its block's threads ran in.
__global__ void run_order_kernel(int64_t* out) {
  __shared__ int64_t next;
  if (threadIdx.x == 0) next = 0;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = next++;
}

// Misuse the emulator reports instead of hanging (the case number is the test's).
__global__ void misuse_kernel(const double* x, double* out, int64_t which) {
  const int lane = threadIdx.x % 32;
  if (which == 0) {
    if (threadIdx.x < 16) __syncthreads();  // half the block never arrives
  } else if (which == 1) {
    if (lane == 5) return;  // the shuffle waits for an exited lane
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
  } else if (which == 2) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, x[threadIdx.x], 20);  // lane 20 not in mask
  } else if (which == 3) {
    if (lane < 16) {
      __syncwarp();
    } else {
      out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
    }
  }
}

at::Tensor warp_ops(const at::Tensor& x) {
  TORCH_CHECK(x.dtype() == at::kDouble && x.is_contiguous() && x.numel() % 64 == 0);
  at::Tensor out = at::empty({x.numel(), kWarpResults}, x.options());
  FASTACT_LAUNCH(x.numel() / 64, 64, 0, nullptr, warp_ops_kernel)(x.const_data_ptr<double>(),
                                                                  out.mutable_data_ptr<double>());
  return out;
}

at::Tensor block_reverse(const at::Tensor& x, int64_t threads, bool synchronized) {
  TORCH_CHECK(x.dtype() == at::kDouble && x.is_contiguous() && threads <= 256 &&
              x.numel() % threads == 0);
  at::Tensor out = at::empty_like(x);
  FASTACT_LAUNCH(x.numel() / threads, threads, 0, nullptr, block_reverse_kernel)(
      x.const_data_ptr<double>(), out.mutable_data_ptr<double>(), synchronized);
  return out;
}

at::Tensor dynamic_reverse(const at::Tensor& x, int64_t threads, int64_t written) {
  TORCH_CHECK(x.dtype() == at::kDouble && x.is_contiguous() && x.numel() % threads == 0);
  at::Tensor out = at::empty_like(x);
  FASTACT_LAUNCH(x.numel() / threads, threads, threads * sizeof(double), nullptr,
                 dynamic_reverse_kernel)(x.const_data_ptr<double>(),
                                         out.mutable_data_ptr<double>(), int(written));
  return out;
}

at::Tensor run_order(int64_t blocks, int64_t threads) {
  at::Tensor out = at::empty({blocks, threads}, at::kLong);
  FASTACT_LAUNCH(blocks, threads, 0, nullptr, run_order_kernel)(out.mutable_data_ptr<int64_t>());
  return out;
}

void misuse(int64_t which) {
  at::Tensor x = at::ones({64}, at::kDouble), out = at::zeros({64}, at::kDouble);
  const int64_t blocks = which == 4 ? 0 : 1;
  const int64_t threads = which == 5 ? 2048 : 64;
  FASTACT_LAUNCH(blocks, threads, 0, nullptr, misuse_kernel)(
      x.const_data_ptr<double>(), out.mutable_data_ptr<double>(), which);
}

}  // namespace

TORCH_LIBRARY(fastact_simt_probes, m) {
  m.def("warp_ops(Tensor x) -> Tensor", &warp_ops);
  m.def("block_reverse(Tensor x, int threads, bool synchronized) -> Tensor", &block_reverse);
  m.def("dynamic_reverse(Tensor x, int threads, int written) -> Tensor", &dynamic_reverse);
  m.def("run_order(int blocks, int threads) -> Tensor", &run_order);
  m.def("misuse(int which) -> ()", &misuse);
}

}  // namespace fastact::simt_probes

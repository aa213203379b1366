// The GmP layer on CUDA: the epilogues around cuBLAS / cuDNN (the ops are csrc/host/layer.h's)
// with the formulas of fastact/layer.h. Parameter-gradient sums use fixed blocks of rows and a
// fixed-order finish: no float atomics.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cstdint>

#include "cuda/runtime.cuh"
#include "fastact/layer.h"
#include "host/layer.h"

namespace fastact::cuda {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kWarpsPerBlock = kBlockThreads / 32;

// ---- the layer's epilogues ------------------------------------------------------------------
// Blocks of 32 columns x 8 warps: a warp takes 32 consecutive columns of a row (one mask word,
// __ballot_sync), the block's warps take every 8th row of the block's rows.

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    epilogue_forward_kernel(scalar_t* __restrict__ z,
                            const at::opmath_type<scalar_t>* __restrict__ radius,
                            const at::opmath_type<scalar_t>* __restrict__ bias,
                            int32_t* __restrict__ mask, int64_t rows, int64_t cols, int64_t words,
                            int64_t rows_per_block) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t m = int64_t(blockIdx.x) * 32 + lane;
  const bool inside = m < cols;
  const acc_t r = inside ? radius[m] : acc_t(0);
  const acc_t b = inside ? bias[m] : acc_t(0);
  const int64_t first = int64_t(blockIdx.y) * rows_per_block;
  const int64_t last = first + rows_per_block < rows ? first + rows_per_block : rows;
  for (int64_t row = first + warp; row < last; row += kWarpsPerBlock) {
    bool active = false;
    if (inside) {
      scalar_t* p = z + row * cols + m;
      const acc_t pre = static_cast<acc_t>(*p) + b;
      *p = static_cast<scalar_t>(geometric_relu_output(r, pre));
      active = geometric_relu_active(pre);
    }
    const unsigned bits = __ballot_sync(0xffffffffu, active);
    if (lane == 0) mask[row * words + blockIdx.x] = static_cast<int32_t>(bits);
  }
}

// g' = mask ? grad : 0, and each column's sum over the block's rows into partial[blockIdx.y]:
// per thread in row order, then over the 8 warps in order (shared memory).
template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    epilogue_backward_kernel(const scalar_t* __restrict__ grad, const int32_t* __restrict__ mask,
                             scalar_t* __restrict__ grad_masked,
                             at::opmath_type<scalar_t>* __restrict__ partial, int64_t rows,
                             int64_t cols, int64_t words, int64_t rows_per_block) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t warp_sums[kWarpsPerBlock][32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t m = int64_t(blockIdx.x) * 32 + lane;
  const bool inside = m < cols;
  const int64_t first = int64_t(blockIdx.y) * rows_per_block;
  const int64_t last = first + rows_per_block < rows ? first + rows_per_block : rows;
  acc_t sum = acc_t(0);
  if (inside) {
    for (int64_t row = first + warp; row < last; row += kWarpsPerBlock) {
      const bool active =
          ((static_cast<uint32_t>(mask[row * words + blockIdx.x]) >> lane) & 1u) != 0;
      const acc_t g = geometric_relu_masked_grad(static_cast<acc_t>(grad[row * cols + m]), active);
      grad_masked[row * cols + m] = static_cast<scalar_t>(g);
      sum += g;
    }
  }
  warp_sums[warp][lane] = sum;
  __syncthreads();
  if (warp == 0 && inside) {
    acc_t total = acc_t(0);
    for (int w = 0; w < kWarpsPerBlock; ++w) total += warp_sums[w][lane];
    partial[int64_t(blockIdx.y) * cols + m] = total;
  }
}

// A block per channel (fastact/layer.h has the formulas): block sums in a fixed tree order.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kBlockThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  const acc_t total = scratch[0];
  __syncthreads();
  return total;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    radial_backward_kernel(scalar_t* __restrict__ grad_u, const scalar_t* __restrict__ u,
                           const scalar_t* __restrict__ radius,
                           const at::opmath_type<scalar_t>* __restrict__ partial, int64_t blocks,
                           int64_t cols, const scalar_t* __restrict__ bias,
                           scalar_t* __restrict__ grad_radius, scalar_t* __restrict__ grad_bias,
                           scalar_t* __restrict__ weight, int64_t fan_in, int64_t positions,
                           int64_t sum_stride_c, int64_t sum_stride_p, int64_t bias_stride_c,
                           int64_t bias_stride_p, bool bias_per_position) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t scratch[kBlockThreads];
  const int64_t c = blockIdx.x;
  scalar_t* g_row = grad_u + c * fan_in;
  const scalar_t* u_row = u + c * fan_in;
  const acc_t r = static_cast<acc_t>(radius[c]);
  acc_t dot = acc_t(0), bias_term = acc_t(0), sum_all = acc_t(0);
  for (int64_t k = threadIdx.x; k < fan_in; k += kBlockThreads) {
    dot += static_cast<acc_t>(g_row[k]) * static_cast<acc_t>(u_row[k]);
  }
  for (int64_t p = threadIdx.x; p < positions; p += kBlockThreads) {
    const acc_t s = layer_column_sum(partial + c * sum_stride_c + p * sum_stride_p, blocks, cols);
    sum_all += s;
    if (bias != nullptr)
      bias_term += static_cast<acc_t>(bias[c * bias_stride_c + p * bias_stride_p]) * s;
    if (bias_per_position) grad_bias[c * positions + p] = static_cast<scalar_t>(r * s);
  }
  dot = block_sum(dot, scratch);
  bias_term = block_sum(bias_term, scratch);
  sum_all = block_sum(sum_all, scratch);
  for (int64_t k = threadIdx.x; k < fan_in; k += kBlockThreads) {
    g_row[k] = static_cast<scalar_t>(r * static_cast<acc_t>(g_row[k]));
    if (weight != nullptr)
      weight[c * fan_in + k] = static_cast<scalar_t>(r * static_cast<acc_t>(u_row[k]));
  }
  if (threadIdx.x == 0) {
    grad_radius[c] = static_cast<scalar_t>(dot + bias_term);
    if (!bias_per_position) grad_bias[c] = static_cast<scalar_t>(r * sum_all);
  }
}

// Row blocks of the epilogue grids: grid.y stays within CUDA's 65535.
int64_t epilogue_rows_per_block(int64_t rows) { return rows_per_sum_block(rows, 32, 4096); }

struct CudaEpilogues {
  using DeviceGuard = c10::cuda::OptionalCUDAGuard;
  static constexpr int64_t kMaxSumBlocks = 256;

  static void forward(const at::Tensor& z, const OutputGeometry& geometry,
                      const at::Tensor& radius_columns, const at::Tensor& bias_columns,
                      const at::Tensor& mask) {
    const int64_t rows_per_block = epilogue_rows_per_block(geometry.rows);
    const dim3 grid(geometry.words_per_row(), ceil_div(geometry.rows, rows_per_block));
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, z.scalar_type(), "geometric_relu_epilogue", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          FASTACT_LAUNCH(grid, kBlockThreads, 0, at::cuda::getCurrentCUDAStream(),
                         epilogue_forward_kernel<scalar_t>)(
                  z.mutable_data_ptr<scalar_t>(), radius_columns.const_data_ptr<acc_t>(),
                  bias_columns.const_data_ptr<acc_t>(), mask.mutable_data_ptr<int32_t>(),
                  geometry.rows, geometry.cols, geometry.words_per_row(), rows_per_block);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& mask,
                       const OutputGeometry& geometry, int64_t rows_per_block,
                       const at::Tensor& grad_masked, const at::Tensor& partial) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, grad.scalar_type(), "geometric_relu_epilogue_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          FASTACT_LAUNCH(dim3(geometry.words_per_row(), partial.size(0)), kBlockThreads, 0,
                         at::cuda::getCurrentCUDAStream(), epilogue_backward_kernel<scalar_t>)(
                  grad.const_data_ptr<scalar_t>(), mask.const_data_ptr<int32_t>(),
                  grad_masked.mutable_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(),
                  geometry.rows, geometry.cols, geometry.words_per_row(), rows_per_block);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }

  static void radial(const RadialTensors& t, const OutputGeometry& geometry) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, t.u.scalar_type(), "geometric_relu_radial_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          FASTACT_LAUNCH(geometry.channels, kBlockThreads, 0, at::cuda::getCurrentCUDAStream(),
                         radial_backward_kernel<scalar_t>)(
                  t.grad_u.mutable_data_ptr<scalar_t>(), t.u.const_data_ptr<scalar_t>(),
                  t.radius.const_data_ptr<scalar_t>(), t.partial.const_data_ptr<acc_t>(),
                  t.partial.size(0), geometry.cols,
                  t.bias.defined() ? t.bias.const_data_ptr<scalar_t>() : nullptr,
                  t.grad_radius.mutable_data_ptr<scalar_t>(),
                  t.grad_bias.mutable_data_ptr<scalar_t>(),
                  t.weight.defined() ? t.weight.mutable_data_ptr<scalar_t>() : nullptr,
                  t.u.size(1), geometry.positions, geometry.stride_channel(),
                  geometry.stride_position(), t.bias_stride_c, t.bias_stride_p,
                  t.bias_per_position);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
};

}  // namespace

FASTACT_CUDA_KERNELS(m) { register_layer_kernels<CudaEpilogues>(m); }

}  // namespace fastact::cuda

// GmP on CUDA: the hyperspherical maps (a warp or a block scans each row in float64 with
// shuffles), the layer's epilogues around cuBLAS / cuDNN (csrc/geometric_layer.h), with the
// formulas of fastact/geometric.h. Parameter-gradient sums use fixed blocks of rows and a
// fixed-order finish: no float atomics.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "fastact/geometric.h"
#include "geometric_layer.h"

namespace fastact::cuda {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kWarpsPerBlock = kBlockThreads / 32;
// Consecutive coordinates per thread in the row scans.
constexpr int kItems = 4;
// Rows longer than this are scanned by a whole block, shorter ones by a warp.
constexpr int64_t kWarpRowLimit = 512;

// ---- scans over a row group (a warp, or the block) ---------------------------------------

// h -> a h + b: the maps of the reverse scan S_k = s_k S_{k+1} + g_k c'_k.
struct Affine {
  double a, b;
};

struct Multiply {
  __device__ double operator()(double first, double second) const { return first * second; }
  static __device__ double identity() { return 1.0; }
};

// `first` applied first, then `second`.
struct Compose {
  __device__ Affine operator()(Affine first, Affine second) const {
    return {first.a * second.a, first.b * second.a + second.b};
  }
  static __device__ Affine identity() { return {1.0, 0.0}; }
};

__device__ double shuffle_up(double v, int delta) { return __shfl_up_sync(0xffffffffu, v, delta); }
__device__ Affine shuffle_up(Affine v, int delta) {
  return {__shfl_up_sync(0xffffffffu, v.a, delta), __shfl_up_sync(0xffffffffu, v.b, delta)};
}
__device__ double shuffle(double v, int lane) { return __shfl_sync(0xffffffffu, v, lane); }
__device__ Affine shuffle(Affine v, int lane) {
  return {__shfl_sync(0xffffffffu, v.a, lane), __shfl_sync(0xffffffffu, v.b, lane)};
}

// The scan of `value` over the kGroup threads of a row group in thread order: the combination
// of the values before this thread (`exclusive`) and of all (`total`). Every thread of the
// group calls it; kGroup = kBlockThreads synchronises the block.
template <int kGroup, typename T, typename Op>
__device__ void group_scan(T value, Op op, T* warp_totals, T& exclusive, T& total) {
  const int lane = threadIdx.x & 31;
  T inclusive = value;
#pragma unroll
  for (int delta = 1; delta < 32; delta <<= 1) {
    const T other = shuffle_up(inclusive, delta);
    if (lane >= delta) inclusive = op(other, inclusive);
  }
  T before = shuffle_up(inclusive, 1);
  if (lane == 0) before = Op::identity();
  if constexpr (kGroup == 32) {
    exclusive = before;
    total = shuffle(inclusive, 31);
  } else {
    static_assert(kGroup == kBlockThreads, "a row group is a warp or the block");
    const int warp = threadIdx.x >> 5;
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    T prefix = Op::identity();
    for (int w = 0; w < warp; ++w) prefix = op(prefix, warp_totals[w]);
    T all = prefix;
    for (int w = warp; w < kWarpsPerBlock; ++w) all = op(all, warp_totals[w]);
    exclusive = op(prefix, before);
    total = all;
    __syncthreads();
  }
}

template <int kGroup>
__device__ void group_sync() {
  if constexpr (kGroup == 32) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

// ---- spherical_to_cartesian -----------------------------------------------------------------

// u_k = P_k c'_k: each thread takes kItems consecutive coordinates, the group scans the
// threads' products of sines (exclusive: P at each thread's first coordinate), tile by tile
// with a carry. Products and sines in double.
template <typename scalar_t, int kGroup>
__global__ void __launch_bounds__(kBlockThreads)
    spherical_forward_kernel(const scalar_t* __restrict__ theta, scalar_t* __restrict__ u,
                             int64_t rows, int64_t n) {
  __shared__ double warp_totals[kWarpsPerBlock];
  const int t = threadIdx.x % kGroup;
  const int64_t row = int64_t(blockIdx.x) * (kBlockThreads / kGroup) + threadIdx.x / kGroup;
  if (row >= rows) return;  // a whole warp (kGroup 32); a block has one row otherwise
  const scalar_t* angles = theta + row * (n - 1);
  scalar_t* out = u + row * n;
  double carry = 1.0;
  for (int64_t start = 0; start < n; start += kGroup * kItems) {
    const int64_t first = start + int64_t(t) * kItems;
    double s[kItems], c[kItems];
    double product = 1.0;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t k = first + e;
      s[e] = 1.0;
      c[e] = 1.0;  // the last coordinate's cosine factor, and padding
      if (k < n - 1) sincos(static_cast<double>(angles[k]), &s[e], &c[e]);
      product *= s[e];
    }
    double exclusive, total;
    group_scan<kGroup>(product, Multiply{}, warp_totals, exclusive, total);
    double prefix = carry * exclusive;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t k = first + e;
      if (k < n) out[k] = static_cast<scalar_t>(prefix * c[e]);
      prefix *= s[e];
    }
    carry *= total;
  }
}

// Pass 1, tiles from the right (thread t takes kItems consecutive coordinates, descending):
// the reverse affine scan gives S_{k+1} and factor_k = c_k S_{k+1} - g_k s_k into `work`.
// Pass 2, tiles from the left: grad_theta_k = P_k factor_k. `work` may be grad_theta itself.
template <typename scalar_t, typename work_t, int kGroup>
__global__ void __launch_bounds__(kBlockThreads)
    spherical_backward_kernel(const scalar_t* __restrict__ grad_u,
                              const scalar_t* __restrict__ theta, work_t* work,
                              scalar_t* grad_theta, int64_t rows, int64_t n) {
  __shared__ Affine affine_totals[kWarpsPerBlock];
  __shared__ double product_totals[kWarpsPerBlock];
  const int t = threadIdx.x % kGroup;
  const int64_t row = int64_t(blockIdx.x) * (kBlockThreads / kGroup) + threadIdx.x / kGroup;
  if (row >= rows) return;
  const scalar_t* angles = theta + row * (n - 1);
  const scalar_t* g = grad_u + row * n;
  work_t* factors = work + row * (n - 1);
  scalar_t* out = grad_theta + row * (n - 1);
  constexpr int64_t kTile = int64_t(kGroup) * kItems;
  double suffix = 0.0;  // S at the right end of the tile (S_n = 0)
  for (int64_t end = n; end > 0; end -= kTile) {
    const int64_t last = end - 1 - int64_t(t) * kItems;  // this thread's first, rightmost k
    double s[kItems], c[kItems], gk[kItems];
    Affine local = Compose::identity();
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t k = last - e;
      s[e] = 1.0;  // padding: the identity map
      c[e] = 0.0;
      gk[e] = 0.0;
      if (k >= 0) {
        gk[e] = static_cast<double>(g[k]);
        s[e] = 0.0;  // k = n - 1: S_{n-1} = g_{n-1}
        c[e] = 1.0;
        if (k < n - 1) sincos(static_cast<double>(angles[k]), &s[e], &c[e]);
      }
      local = Compose{}(local, Affine{s[e], gk[e] * c[e]});
    }
    Affine exclusive, total;
    group_scan<kGroup>(local, Compose{}, affine_totals, exclusive, total);
    double suffix_next = exclusive.a * suffix + exclusive.b;  // S_{last + 1}
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t k = last - e;
      if (k >= 0 && k < n - 1) {
        factors[k] = static_cast<work_t>(spherical_angle_grad_factor(c[e], s[e], gk[e], suffix_next));
      }
      suffix_next = spherical_suffix_step(gk[e], c[e], s[e], suffix_next);
    }
    suffix = total.a * suffix + total.b;
  }
  group_sync<kGroup>();  // pass 2 reads factors other threads wrote
  double carry = 1.0;
  for (int64_t start = 0; start < n - 1; start += kTile) {
    const int64_t first = start + int64_t(t) * kItems;
    double s[kItems];
    double product = 1.0;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t k = first + e;
      s[e] = k < n - 1 ? sin(static_cast<double>(angles[k])) : 1.0;
      product *= s[e];
    }
    double exclusive, total;
    group_scan<kGroup>(product, Multiply{}, product_totals, exclusive, total);
    double prefix = carry * exclusive;
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int64_t k = first + e;
      if (k < n - 1) out[k] = static_cast<scalar_t>(prefix * static_cast<double>(factors[k]));
      prefix *= s[e];
    }
    carry *= total;
  }
}

template <typename Launch>
void launch_rows(int64_t rows, int64_t n, Launch launch) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (n > kWarpRowLimit) {
    launch(std::integral_constant<int, kBlockThreads>{}, rows, stream);
  } else {
    launch(std::integral_constant<int, 32>{}, (rows + kWarpsPerBlock - 1) / kWarpsPerBlock, stream);
  }
}

at::Tensor spherical_to_cartesian_cuda(const at::Tensor& theta) {
  check_float_tensor("spherical_to_cartesian", "theta", theta);
  TORCH_CHECK(theta.dim() >= 1, "fastact.spherical_to_cartesian: theta must have at least one "
              "dimension (the angles), got a 0-d tensor");
  const c10::cuda::OptionalCUDAGuard guard(theta.device());
  std::vector<int64_t> shape = theta.sizes().vec();
  const int64_t n = ++shape.back();
  at::Tensor u = at::empty(shape, theta.options());
  const int64_t rows = u.numel() / n;
  if (rows == 0) return u;
  const at::Tensor angles = theta.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta.scalar_type(), "spherical_to_cartesian", [&] {
    launch_rows(rows, n, [&](auto group, int64_t blocks, cudaStream_t stream) {
      spherical_forward_kernel<scalar_t, decltype(group)::value><<<blocks, kBlockThreads, 0, stream>>>(
          angles.const_data_ptr<scalar_t>(), u.mutable_data_ptr<scalar_t>(), rows, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return u;
}

at::Tensor spherical_to_cartesian_backward_cuda(const at::Tensor& grad_u, const at::Tensor& theta) {
  const char* op = "spherical_to_cartesian_backward";
  check_float_tensor(op, "theta", theta);
  TORCH_CHECK(theta.dim() >= 1, "fastact.", op, ": theta must have at least one dimension");
  std::vector<int64_t> shape = theta.sizes().vec();
  const int64_t n = ++shape.back();
  TORCH_CHECK(grad_u.scalar_type() == theta.scalar_type() && grad_u.device() == theta.device() &&
                  grad_u.sizes() == at::IntArrayRef(shape),
              "fastact.", op, ": grad_u must be a ", theta.scalar_type(), " tensor of shape ",
              at::IntArrayRef(shape), ", got ", grad_u.scalar_type(), " ", grad_u.sizes());
  const c10::cuda::OptionalCUDAGuard guard(theta.device());
  at::Tensor grad_theta = at::empty(theta.sizes(), theta.options());
  const int64_t rows = grad_u.numel() / n;
  if (rows == 0 || n == 1) return grad_theta;
  const at::Tensor grad = grad_u.contiguous();
  const at::Tensor angles = theta.contiguous();
  // The factors between the passes: float32 (float64 for float64), in grad_theta itself when
  // it has that dtype.
  const c10::ScalarType work_dtype = compute_dtype(theta.scalar_type());
  at::Tensor work = theta.scalar_type() == work_dtype
                        ? grad_theta
                        : at::empty(theta.sizes(), theta.options().dtype(work_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta.scalar_type(), "spherical_to_cartesian_backward", [&] {
    using work_t = at::opmath_type<scalar_t>;
    launch_rows(rows, n, [&](auto group, int64_t blocks, cudaStream_t stream) {
      spherical_backward_kernel<scalar_t, work_t, decltype(group)::value>
          <<<blocks, kBlockThreads, 0, stream>>>(
              grad.const_data_ptr<scalar_t>(), angles.const_data_ptr<scalar_t>(),
              work.mutable_data_ptr<work_t>(), grad_theta.mutable_data_ptr<scalar_t>(), rows, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return grad_theta;
}

// ---- cartesian_to_spherical: a thread per row, sequential (it converts weights once) ---------

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    cartesian_forward_kernel(const scalar_t* __restrict__ w, scalar_t* __restrict__ radius,
                             scalar_t* __restrict__ theta, int64_t rows, int64_t n) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const scalar_t* w_row = w + row * n;
  scalar_t* theta_row = theta + row * (n - 1);
  const double r = cartesian_to_spherical_row(
      n, [&](int64_t k) { return static_cast<double>(w_row[k]); },
      [&](int64_t k, double angle) { theta_row[k] = static_cast<scalar_t>(angle); });
  radius[row] = static_cast<scalar_t>(r);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    cartesian_backward_kernel(const scalar_t* grad_radius, const scalar_t* grad_theta,
                              const scalar_t* __restrict__ w, double* __restrict__ tails,
                              scalar_t* __restrict__ grad_w, int64_t rows, int64_t n) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const scalar_t* w_row = w + row * n;
  const scalar_t* grad_theta_row = grad_theta == nullptr ? nullptr : grad_theta + row * (n - 1);
  scalar_t* out = grad_w + row * n;
  cartesian_to_spherical_backward_row(
      n, [&](int64_t k) { return static_cast<double>(w_row[k]); },
      grad_radius == nullptr ? 0.0 : static_cast<double>(grad_radius[row]),
      [&](int64_t k) { return grad_theta_row == nullptr ? 0.0 : static_cast<double>(grad_theta_row[k]); },
      [&](int64_t j, double value) { out[j] = static_cast<scalar_t>(value); },
      tails + row * (n + 1));
}

void check_cartesian(const char* op, const at::Tensor& w) {
  check_float_tensor(op, "w", w);
  TORCH_CHECK(w.dim() >= 1 && w.size(-1) >= 2, "fastact.", op,
              ": w must have at least 2 coordinates in its last dimension, got shape ", w.sizes());
}

int64_t blocks_for(int64_t items) { return (items + kBlockThreads - 1) / kBlockThreads; }

std::tuple<at::Tensor, at::Tensor> cartesian_to_spherical_cuda(const at::Tensor& w) {
  check_cartesian("cartesian_to_spherical", w);
  const c10::cuda::OptionalCUDAGuard guard(w.device());
  const int64_t n = w.size(-1);
  at::Tensor radius = at::empty(w.sizes().slice(0, w.dim() - 1), w.options());
  std::vector<int64_t> shape = w.sizes().vec();
  shape.back() = n - 1;
  at::Tensor theta = at::empty(shape, w.options());
  const int64_t rows = radius.numel();
  if (rows == 0) return {radius, theta};
  const at::Tensor coordinates = w.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "cartesian_to_spherical", [&] {
    cartesian_forward_kernel<scalar_t><<<blocks_for(rows), kBlockThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        coordinates.const_data_ptr<scalar_t>(), radius.mutable_data_ptr<scalar_t>(),
        theta.mutable_data_ptr<scalar_t>(), rows, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {radius, theta};
}

at::Tensor cartesian_to_spherical_backward_cuda(const std::optional<at::Tensor>& grad_radius,
                                                const std::optional<at::Tensor>& grad_theta,
                                                const at::Tensor& w) {
  const char* op = "cartesian_to_spherical_backward";
  check_cartesian(op, w);
  const c10::cuda::OptionalCUDAGuard guard(w.device());
  const int64_t n = w.size(-1);
  const at::IntArrayRef batch = w.sizes().slice(0, w.dim() - 1);
  std::vector<int64_t> theta_shape = w.sizes().vec();
  theta_shape.back() = n - 1;
  const auto checked = [&](const std::optional<at::Tensor>& t, const char* name,
                           at::IntArrayRef shape) -> at::Tensor {
    if (!t.has_value()) return {};
    TORCH_CHECK(t->scalar_type() == w.scalar_type() && t->device() == w.device() &&
                    t->sizes() == shape,
                "fastact.", op, ": ", name, " must be a ", w.scalar_type(), " tensor of shape ",
                shape, ", got ", t->scalar_type(), " ", t->sizes());
    return t->contiguous();
  };
  const at::Tensor radius_grad = checked(grad_radius, "grad_radius", batch);
  const at::Tensor theta_grad = checked(grad_theta, "grad_theta", theta_shape);
  at::Tensor grad_w = at::empty(w.sizes(), w.options());
  const int64_t rows = grad_w.numel() / n;
  if (rows == 0) return grad_w;
  const at::Tensor coordinates = w.contiguous();
  at::Tensor tails = at::empty({rows, n + 1}, w.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "cartesian_to_spherical_backward", [&] {
    cartesian_backward_kernel<scalar_t><<<blocks_for(rows), kBlockThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        radius_grad.defined() ? radius_grad.const_data_ptr<scalar_t>() : nullptr,
        theta_grad.defined() ? theta_grad.const_data_ptr<scalar_t>() : nullptr,
        coordinates.const_data_ptr<scalar_t>(), tails.mutable_data_ptr<double>(),
        grad_w.mutable_data_ptr<scalar_t>(), rows, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_w;
}

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
      const bool active = ((static_cast<uint32_t>(mask[row * words + blockIdx.x]) >> lane) & 1u) != 0;
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

template <typename acc_t>
__global__ void __launch_bounds__(kBlockThreads)
    sum_blocks_kernel(const acc_t* __restrict__ partial, acc_t* __restrict__ sums, int64_t blocks,
                      int64_t cols) {
  const int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m >= cols) return;
  acc_t total = acc_t(0);
  for (int64_t b = 0; b < blocks; ++b) total += partial[b * cols + m];
  sums[m] = total;
}

// A block per channel (geometric_args.h of the CPU kernels has the formulas): block sums in a
// fixed tree order.
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
                           const at::opmath_type<scalar_t>* __restrict__ sums,
                           const scalar_t* __restrict__ bias, scalar_t* __restrict__ grad_radius,
                           scalar_t* __restrict__ grad_bias, int64_t fan_in, int64_t positions,
                           int64_t sum_stride_c, int64_t sum_stride_p, int64_t bias_stride_c,
                           int64_t bias_stride_p, bool bias_per_position) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t scratch[kBlockThreads];
  const int64_t c = blockIdx.x;
  scalar_t* g_row = grad_u + c * fan_in;
  const scalar_t* u_row = u + c * fan_in;
  acc_t dot = acc_t(0), bias_term = acc_t(0), sum_all = acc_t(0);
  for (int64_t k = threadIdx.x; k < fan_in; k += kBlockThreads) {
    dot += static_cast<acc_t>(g_row[k]) * static_cast<acc_t>(u_row[k]);
  }
  for (int64_t p = threadIdx.x; p < positions; p += kBlockThreads) {
    const acc_t s = sums[c * sum_stride_c + p * sum_stride_p];
    sum_all += s;
    if (bias != nullptr) bias_term += static_cast<acc_t>(bias[c * bias_stride_c + p * bias_stride_p]) * s;
  }
  dot = block_sum(dot, scratch);
  bias_term = block_sum(bias_term, scratch);
  sum_all = block_sum(sum_all, scratch);
  const acc_t r = static_cast<acc_t>(radius[c]);
  for (int64_t k = threadIdx.x; k < fan_in; k += kBlockThreads) {
    g_row[k] = static_cast<scalar_t>(r * static_cast<acc_t>(g_row[k]));
  }
  if (bias_per_position) {
    for (int64_t p = threadIdx.x; p < positions; p += kBlockThreads) {
      grad_bias[c * positions + p] = static_cast<scalar_t>(r * sums[c * sum_stride_c + p * sum_stride_p]);
    }
  }
  if (threadIdx.x == 0) {
    grad_radius[c] = static_cast<scalar_t>(dot + bias_term);
    if (!bias_per_position) grad_bias[c] = static_cast<scalar_t>(r * sum_all);
  }
}

// Row blocks of the epilogue grids: grid.y stays within CUDA's 65535.
int64_t epilogue_rows_per_block(int64_t rows) { return rows_per_sum_block(rows, 32, 4096); }

struct CudaEpilogues {
  static at::Tensor forward(at::Tensor& z, const OutputGeometry& geometry, const at::Tensor& radius,
                            const std::optional<at::Tensor>& bias) {
    const c10::cuda::OptionalCUDAGuard guard(z.device());
    const at::Tensor radius_columns = per_column(radius, geometry);
    const at::Tensor bias_columns =
        bias.has_value() ? per_column(*bias, geometry) : at::zeros_like(radius_columns);
    const int64_t words = geometry.words_per_row();
    at::Tensor mask = at::empty({geometry.rows, words}, z.options().dtype(at::kInt));
    if (geometry.rows == 0 || geometry.cols == 0) return mask;
    const int64_t rows_per_block = epilogue_rows_per_block(geometry.rows);
    const dim3 grid(words, (geometry.rows + rows_per_block - 1) / rows_per_block);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "geometric_relu_epilogue", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      epilogue_forward_kernel<scalar_t><<<grid, kBlockThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          z.mutable_data_ptr<scalar_t>(), radius_columns.const_data_ptr<acc_t>(),
          bias_columns.const_data_ptr<acc_t>(), mask.mutable_data_ptr<int32_t>(), geometry.rows,
          geometry.cols, words, rows_per_block);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return mask;
  }

  static std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& mask,
                                                     const OutputGeometry& geometry) {
    const c10::cuda::OptionalCUDAGuard guard(grad.device());
    const int64_t rows_per_block = rows_per_sum_block(geometry.rows, 64, 256);
    const int64_t blocks = (geometry.rows + rows_per_block - 1) / rows_per_block;
    const c10::ScalarType acc = compute_dtype(grad.scalar_type());
    at::Tensor grad_masked = at::empty_like(grad);
    at::Tensor sums = at::zeros({geometry.cols}, grad.options().dtype(acc));
    if (blocks == 0 || geometry.cols == 0) return {grad_masked, sums};
    at::Tensor partial = at::empty({blocks, geometry.cols}, grad.options().dtype(acc));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "geometric_relu_epilogue_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      epilogue_backward_kernel<scalar_t><<<dim3(geometry.words_per_row(), blocks), kBlockThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), mask.const_data_ptr<int32_t>(),
          grad_masked.mutable_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(),
          geometry.rows, geometry.cols, geometry.words_per_row(), rows_per_block);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sum_blocks_kernel<acc_t><<<blocks_for(geometry.cols), kBlockThreads, 0, stream>>>(
          partial.const_data_ptr<acc_t>(), sums.mutable_data_ptr<acc_t>(), blocks, geometry.cols);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {grad_masked, sums};
  }

  static std::tuple<at::Tensor, at::Tensor> radial(at::Tensor& grad_u, const at::Tensor& u,
                                                   const at::Tensor& radius, const at::Tensor& sums,
                                                   const OutputGeometry& geometry,
                                                   const std::optional<at::Tensor>& bias) {
    const c10::cuda::OptionalCUDAGuard guard(u.device());
    const bool per_position = bias.has_value() && bias->numel() != geometry.channels;
    const at::Tensor bias_values = bias.has_value() ? bias->contiguous() : at::Tensor();
    const at::Tensor radius_values = radius.contiguous();
    at::Tensor grad_radius = at::empty_like(radius_values);
    at::Tensor grad_bias = at::empty(per_position ? geometry.cols : geometry.channels, radius.options());
    if (geometry.channels == 0) return {grad_radius, grad_bias};
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "geometric_relu_radial_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      radial_backward_kernel<scalar_t><<<geometry.channels, kBlockThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          grad_u.mutable_data_ptr<scalar_t>(), u.const_data_ptr<scalar_t>(),
          radius_values.const_data_ptr<scalar_t>(), sums.const_data_ptr<acc_t>(),
          bias_values.defined() ? bias_values.const_data_ptr<scalar_t>() : nullptr,
          grad_radius.mutable_data_ptr<scalar_t>(), grad_bias.mutable_data_ptr<scalar_t>(),
          u.size(1), geometry.positions, geometry.stride_channel(), geometry.stride_position(),
          per_position ? geometry.positions : 1, per_position ? 1 : 0, per_position);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {grad_radius, grad_bias};
  }
};

std::tuple<at::Tensor, at::Tensor> geometric_relu_linear_cuda(
    const at::Tensor& x, const at::Tensor& u, const at::Tensor& radius,
    const std::optional<at::Tensor>& bias) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return linear_forward<CudaEpilogues>(x, u, radius, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> geometric_relu_linear_backward_cuda(
    const at::Tensor& grad_z, const at::Tensor& mask, const at::Tensor& x, const at::Tensor& u,
    const at::Tensor& radius, const std::optional<at::Tensor>& bias, bool x_needs_grad) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return linear_backward<CudaEpilogues>(grad_z, mask, x, u, radius, bias, x_needs_grad);
}

std::tuple<at::Tensor, at::Tensor> geometric_relu_conv2d_cuda(
    const at::Tensor& x, const at::Tensor& u, const at::Tensor& radius,
    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return conv2d_forward<CudaEpilogues>(x, u, radius, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> geometric_relu_conv2d_backward_cuda(
    const at::Tensor& grad_z, const at::Tensor& mask, const at::Tensor& x, const at::Tensor& u,
    const at::Tensor& radius, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool x_needs_grad) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return conv2d_backward<CudaEpilogues>(grad_z, mask, x, u, radius, bias, stride, padding,
                                        dilation, groups, x_needs_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CUDA, m) {
  m.impl("spherical_to_cartesian", &spherical_to_cartesian_cuda);
  m.impl("spherical_to_cartesian_backward", &spherical_to_cartesian_backward_cuda);
  m.impl("cartesian_to_spherical", &cartesian_to_spherical_cuda);
  m.impl("cartesian_to_spherical_backward", &cartesian_to_spherical_backward_cuda);
  m.impl("geometric_relu_linear", &geometric_relu_linear_cuda);
  m.impl("geometric_relu_linear_backward", &geometric_relu_linear_backward_cuda);
  m.impl("geometric_relu_conv2d", &geometric_relu_conv2d_cuda);
  m.impl("geometric_relu_conv2d_backward", &geometric_relu_conv2d_backward_cuda);
}

}  // namespace fastact::cuda

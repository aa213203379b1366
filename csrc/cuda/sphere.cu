// The hyperspherical maps on CUDA: a warp or a block scans each row in float64 with shuffles
// (spherical_to_cartesian), a thread per row runs the sequential inverse map; the formulas of
// fastact/sphere.h, the ops around them csrc/host/sphere.h's.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cstdint>
#include <type_traits>

#include "cuda/runtime.cuh"
#include "fastact/sphere.h"
#include "host/sphere.h"

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
        factors[k] =
            static_cast<work_t>(spherical_angle_grad_factor(c[e], s[e], gk[e], suffix_next));
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
      [&](int64_t k) {
        return grad_theta_row == nullptr ? 0.0 : static_cast<double>(grad_theta_row[k]);
      },
      [&](int64_t j, double value) { out[j] = static_cast<scalar_t>(value); },
      tails + row * (n + 1));
}

int64_t blocks_for(int64_t items) { return (items + kBlockThreads - 1) / kBlockThreads; }

struct CudaSphere {
  using DeviceGuard = c10::cuda::OptionalCUDAGuard;

  static void spherical_to_cartesian(const at::Tensor& theta, const at::Tensor& u, int64_t rows,
                                     int64_t n) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, theta.scalar_type(), "spherical_to_cartesian", [&] {
          launch_rows(rows, n, [&](auto group, int64_t blocks, cudaStream_t stream) {
            FASTACT_LAUNCH(blocks, kBlockThreads, 0, stream,
                           spherical_forward_kernel<scalar_t, decltype(group)::value>)(
                theta.const_data_ptr<scalar_t>(), u.mutable_data_ptr<scalar_t>(), rows, n);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });
  }

  static void spherical_to_cartesian_backward(const at::Tensor& grad_u, const at::Tensor& theta,
                                              const at::Tensor& grad_theta, int64_t rows,
                                              int64_t n) {
    // The factors between the passes: float32 (float64 for float64), in grad_theta itself when
    // it has that dtype.
    const c10::ScalarType work_dtype = compute_dtype(theta.scalar_type());
    const at::Tensor work = theta.scalar_type() == work_dtype
                                ? grad_theta
                                : at::empty(theta.sizes(), theta.options().dtype(work_dtype));
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, theta.scalar_type(), "spherical_to_cartesian_backward", [&] {
          using work_t = at::opmath_type<scalar_t>;
          launch_rows(rows, n, [&](auto group, int64_t blocks, cudaStream_t stream) {
            FASTACT_LAUNCH(blocks, kBlockThreads, 0, stream,
                           spherical_backward_kernel<scalar_t, work_t, decltype(group)::value>)(
                    grad_u.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(),
                    work.mutable_data_ptr<work_t>(), grad_theta.mutable_data_ptr<scalar_t>(),
                    rows, n);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });
  }

  static void cartesian_to_spherical(const at::Tensor& w, const at::Tensor& radius,
                                     const at::Tensor& theta, int64_t rows, int64_t n) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, w.scalar_type(), "cartesian_to_spherical", [&] {
          FASTACT_LAUNCH(blocks_for(rows), kBlockThreads, 0, at::cuda::getCurrentCUDAStream(),
                         cartesian_forward_kernel<scalar_t>)(
                  w.const_data_ptr<scalar_t>(), radius.mutable_data_ptr<scalar_t>(),
                  theta.mutable_data_ptr<scalar_t>(), rows, n);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }

  static void cartesian_to_spherical_backward(const at::Tensor& grad_radius,
                                              const at::Tensor& grad_theta, const at::Tensor& w,
                                              const at::Tensor& grad_w, int64_t rows, int64_t n) {
    const at::Tensor tails = at::empty({rows, n + 1}, w.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, w.scalar_type(), "cartesian_to_spherical_backward", [&] {
          FASTACT_LAUNCH(blocks_for(rows), kBlockThreads, 0, at::cuda::getCurrentCUDAStream(),
                         cartesian_backward_kernel<scalar_t>)(
                  grad_radius.defined() ? grad_radius.const_data_ptr<scalar_t>() : nullptr,
                  grad_theta.defined() ? grad_theta.const_data_ptr<scalar_t>() : nullptr,
                  w.const_data_ptr<scalar_t>(), tails.mutable_data_ptr<double>(),
                  grad_w.mutable_data_ptr<scalar_t>(), rows, n);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
};

}  // namespace

FASTACT_CUDA_KERNELS(m) { register_sphere_kernels<CudaSphere>(m); }

}  // namespace fastact::cuda

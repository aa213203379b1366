// Elementwise maps on CUDA: a 128-bit vectorised kernel for tensors that share one dense
// layout (contiguous, channels_last, any permutation), ATen's gpu_kernel for other strides.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/native/cuda/Loops.cuh>
#include <c10/cuda/CUDAGuard.h>

#include <array>
#include <cstdint>
#include <utility>

namespace fastact::cuda {

constexpr int kThreads = 256;

// 16 bytes of scalar_t: one 128-bit load or store (ld.global.v4 / st.global.v4).
template <typename scalar_t>
struct alignas(16) Pack {
  static constexpr int size = 16 / sizeof(scalar_t);
  scalar_t v[size];
};

template <typename scalar_t, size_t N>
using Inputs = std::array<const scalar_t*, N>;

// out[i] = op(in_0[i], ...) over n elements of flat memory, computing in opmath (float for
// half types). Each thread moves whole 16-byte packs in a grid-stride loop; the n % pack
// remaining elements are done one by one.
template <typename scalar_t, size_t N, typename Op, size_t... I>
__global__ void __launch_bounds__(kThreads)
    map_packs_kernel(scalar_t* __restrict__ out, Inputs<scalar_t, N> in, int64_t n, Op op,
                     std::index_sequence<I...>) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t>;
  const int64_t num_packs = n / P::size;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t p = first; p < num_packs; p += step) {
    const P packs[] = {reinterpret_cast<const P*>(in[I])[p]...};
    P result;
#pragma unroll
    for (int e = 0; e < P::size; ++e) {
      result.v[e] = static_cast<scalar_t>(op(static_cast<acc_t>(packs[I].v[e])...));
    }
    reinterpret_cast<P*>(out)[p] = result;
  }
  for (int64_t i = num_packs * P::size + first; i < n; i += step) {
    out[i] = static_cast<scalar_t>(op(static_cast<acc_t>(in[I][i])...));
  }
}

// Wraps an opmath functor for gpu_kernel, which passes and expects scalar_t and needs a
// call operator of fixed arity.
template <typename scalar_t, typename Op, typename Indices>
struct InStorageType;

template <typename scalar_t, typename Op, size_t... I>
struct InStorageType<scalar_t, Op, std::index_sequence<I...>> {
  template <size_t>
  using Arg = scalar_t;
  Op op;
  __device__ scalar_t operator()(Arg<I>... args) const {
    return static_cast<scalar_t>(op(static_cast<at::opmath_type<scalar_t>>(args)...));
  }
};

inline bool shares_dense_layout(const at::Tensor& out, std::initializer_list<at::Tensor> in) {
  if (!out.is_non_overlapping_and_dense()) return false;
  for (const at::Tensor& t : in) {
    if (t.strides() != out.strides()) return false;
  }
  return true;
}

inline bool is_16_byte_aligned(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

// A new tensor laid out like `like` (at::empty_like, as the fake kernel says) holding
// op(inputs...) elementwise. `op` is a functor with a templated __device__ call operator
// taking and returning opmath values. All inputs share `like`'s dtype and shape.
template <size_t N, typename Op>
at::Tensor map_tensors(const at::Tensor& like, std::initializer_list<at::Tensor> inputs, Op op) {
  const c10::cuda::OptionalCUDAGuard guard(like.device());
  at::Tensor out = at::empty_like(like);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "fastact_map", [&] {
    bool aligned = is_16_byte_aligned(out);
    for (const at::Tensor& t : inputs) aligned = aligned && is_16_byte_aligned(t);
    if (aligned && shares_dense_layout(out, inputs)) {
      Inputs<scalar_t, N> ptrs;
      size_t k = 0;
      for (const at::Tensor& t : inputs) ptrs[k++] = t.const_data_ptr<scalar_t>();
      const int64_t n = out.numel();
      const int64_t packs = (n + Pack<scalar_t>::size - 1) / Pack<scalar_t>::size;
      // Enough blocks to fill every SM (8 resident blocks of 256 threads), no more: the
      // grid-stride loop covers the rest.
      const int64_t max_blocks =
          int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
      const int64_t blocks = std::max<int64_t>(
          1, std::min<int64_t>((packs + kThreads - 1) / kThreads, max_blocks));
      map_packs_kernel<scalar_t, N><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          out.mutable_data_ptr<scalar_t>(), ptrs, n, op, std::make_index_sequence<N>{});
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      at::TensorIteratorConfig config;
      config.add_output(out).check_all_same_dtype(true);
      for (const at::Tensor& t : inputs) config.add_const_input(t);
      at::TensorIterator iter = config.build();
      at::native::gpu_kernel(iter, InStorageType<scalar_t, Op, std::make_index_sequence<N>>{op});
    }
  });
  return out;
}

}  // namespace fastact::cuda

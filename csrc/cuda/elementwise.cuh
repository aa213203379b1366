// Elementwise maps on CUDA: a 128-bit vectorised kernel for tensors that share one dense
// layout (contiguous, channels_last, any permutation), an element kernel with offsets from
// the strides for the others.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>

#include "cuda/runtime.cuh"
#include "host/common.h"

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

// The iteration space of a strided map after TensorIterator coalesced its dimensions:
// innermost first; strides in elements, of the output and then of each input.
constexpr int kMaxDims = 12;

template <size_t N>
struct StridedLayout {
  int dims;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims][N + 1];
};

// out[i] = op(in_0[i], ...) element by element, each operand at its own strides.
template <typename scalar_t, size_t N, typename Op, size_t... I>
__global__ void __launch_bounds__(kThreads)
    map_strided_kernel(scalar_t* __restrict__ out, Inputs<scalar_t, N> in, int64_t n,
                       StridedLayout<N> layout, Op op, std::index_sequence<I...>) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t offsets[N + 1] = {};
    int64_t rest = i;
    for (int d = 0; d < layout.dims; ++d) {
      const int64_t coordinate = rest % layout.sizes[d];
      rest /= layout.sizes[d];
      for (size_t k = 0; k <= N; ++k) offsets[k] += coordinate * layout.strides[d][k];
    }
    out[offsets[0]] = static_cast<scalar_t>(op(static_cast<acc_t>(in[I][offsets[I + 1]])...));
  }
}

// Enough blocks of kThreads for `work` items to fill every SM (8 resident blocks each), no
// more: grid-stride loops cover the rest.
inline int64_t grid_for(int64_t work) {
  const int64_t max_blocks =
      int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  return std::max<int64_t>(1, std::min<int64_t>(ceil_div(work, kThreads), max_blocks));
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
    const int64_t n = out.numel();
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    Inputs<scalar_t, N> ptrs{};
    if (aligned && shares_dense_layout(out, inputs)) {
      size_t k = 0;
      for (const at::Tensor& t : inputs) ptrs[k++] = t.const_data_ptr<scalar_t>();
      FASTACT_LAUNCH(grid_for(ceil_div(n, Pack<scalar_t>::size)), kThreads, 0, stream,
                     map_packs_kernel<scalar_t, N>)(out.mutable_data_ptr<scalar_t>(), ptrs, n,
                                                    op, std::make_index_sequence<N>{});
    } else {
      at::TensorIteratorConfig config;
      config.add_output(out).check_all_same_dtype(true);
      for (const at::Tensor& t : inputs) config.add_const_input(t);
      const at::TensorIterator iter = config.build();
      TORCH_CHECK(iter.ndim() <= kMaxDims, "fastact: the CUDA elementwise kernels take at most ",
                  kMaxDims, " dimensions that do not coalesce, got ", iter.ndim());
      StridedLayout<N> layout{int(iter.ndim()), {}, {}};
      for (int d = 0; d < layout.dims; ++d) {
        layout.sizes[d] = iter.shape()[d];
        for (size_t k = 0; k <= N; ++k) {
          layout.strides[d][k] = iter.strides(int(k))[d] / int64_t(sizeof(scalar_t));
        }
      }
      for (size_t k = 0; k < N; ++k) {
        ptrs[k] = static_cast<const scalar_t*>(iter.data_ptr(int(k) + 1));
      }
      FASTACT_LAUNCH(grid_for(n), kThreads, 0, stream, map_strided_kernel<scalar_t, N>)(
          static_cast<scalar_t*>(iter.data_ptr(0)), ptrs, n, layout, op,
          std::make_index_sequence<N>{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace fastact::cuda

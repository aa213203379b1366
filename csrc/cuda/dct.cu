// DCT-basis activation on CUDA, the Kernels of csrc/host/dct.h: the formulas of fastact/dct.h,
// tiled as the Triton kernels (fastact/triton/dct.py) are, which the interpreter tests run.
//
// The channel of an element comes from index math on the dense memory of x, viewed as
// [outer, channels, inner] (dct_channel_view). Forward: elementwise, 16-byte packs when each
// pack's channels follow from its first element's (shared coefficients, inner a multiple of
// the pack, or channels fastest with channels a multiple of it), element by element otherwise.
// Backward: one pass computes grad_x and, per tile and term, the tile's sum of
// grad * cos(pi k_j t) (a fixed tree over the block's threads); a second kernel adds the tile
// sums in a fixed order. No atomics: the coefficient gradient is deterministic.
#include <ATen/OpMathType.h>

#include "cuda/elementwise.cuh"
#include "fastact/dct.h"
#include "host/dct.h"

namespace fastact::cuda {
namespace {

constexpr int kRunElements = 8;    // runs: a thread's elements; tile = 2048 of one channel
constexpr int kTileChannels = 32;  // channels fastest: a warp spans 32 channels of a row,
constexpr int kRowLanes = kThreads / kTileChannels;  // 8 warps take 8 rows at a time,
constexpr int kRowElements = 8;    // 8 times: tile = 64 rows x 32 channels
constexpr int kTileRows = kRowLanes * kRowElements;
constexpr int kSumChunk = 64;      // pass 2: pieces per inner sum

template <typename T>
struct Basis {
  T scale, offset;
  bool odd, clamp;
};

// y of one element (dct_value of dct.h); coeffs points at its channel's F_0, the next terms
// stride_j apart.
template <typename T>
__device__ T element_value(T x, const T* __restrict__ coeffs, int64_t stride_j, int num_coeffs,
                           const Basis<T>& b) {
  return dct_value(x, b.scale, b.offset, b.odd, b.clamp, num_coeffs,
                   [&](int j) { return __ldg(coeffs + j * stride_j); });
}

// The coefficient table: row `channel` at table + channel * stride_c, terms stride_j apart.
template <typename T>
struct Table {
  const T* __restrict__ data;
  int64_t stride_c, stride_j;
  int num_coeffs;
};

// [outer, channels, inner] memory: the channel of the element at `offset`.
struct Channels {
  int64_t inner, channels;
  __device__ int64_t of(int64_t offset) const { return (offset / inner) % channels; }
};

// Forward over whole 16-byte packs whose lanes' channels are first + lane * lane_step
// (lane_step 0 or 1), then the n % pack remaining elements one by one.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    dct_forward_packs_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t n,
                             Table<at::opmath_type<scalar_t>> table, Channels layout,
                             int64_t lane_step, Basis<at::opmath_type<scalar_t>> basis) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t>;
  const int64_t num_packs = n / P::size;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = first; i < num_packs; i += step) {
    const P in = reinterpret_cast<const P*>(x)[i];
    const int64_t channel = layout.of(i * P::size);
    P out;
#pragma unroll
    for (int e = 0; e < P::size; ++e) {
      const acc_t* coeffs = table.data + (channel + e * lane_step) * table.stride_c;
      out.v[e] = static_cast<scalar_t>(element_value(static_cast<acc_t>(in.v[e]), coeffs,
                                                 table.stride_j, table.num_coeffs, basis));
    }
    reinterpret_cast<P*>(y)[i] = out;
  }
  for (int64_t i = num_packs * P::size + first; i < n; i += step) {
    const acc_t* coeffs = table.data + layout.of(i) * table.stride_c;
    y[i] = static_cast<scalar_t>(element_value(static_cast<acc_t>(x[i]), coeffs, table.stride_j,
                                           table.num_coeffs, basis));
  }
}

// Forward element by element, for layouts or alignments the pack kernel cannot take.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    dct_forward_elements_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                int64_t n, Table<at::opmath_type<scalar_t>> table,
                                Channels layout, Basis<at::opmath_type<scalar_t>> basis) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const acc_t* coeffs = table.data + layout.of(i) * table.stride_c;
    y[i] = static_cast<scalar_t>(element_value(static_cast<acc_t>(x[i]), coeffs, table.stride_j,
                                           table.num_coeffs, basis));
  }
}

// The per-element state of the backward: the two recurrences, and the signs that turn their
// terms into cos / sin of pi k_j t (dct_point).
template <typename T>
struct BackwardState {
  T lambda, cos_value, cos_difference, sin_value, sin_difference;
  T weight_even, weight_odd;    // grad * cos sign: the coefficient gradient's weights
  T slope_even, slope_odd;      // sums of G_j s_j over even / odd j
  T sin_sign_even, sin_sign_odd, flows;
};

template <typename T>
__device__ BackwardState<T> backward_state(T grad, T x, const Basis<T>& b) {
  const DctPoint<T> p = dct_point(x, b.scale, b.offset, b.odd, b.clamp);
  return {p.lambda, p.cos_first, p.cos_difference, p.sin_first, p.sin_difference,
          grad * p.cos_sign_even, grad * p.cos_sign_odd, T(0), T(0), p.sin_sign_even,
          p.sin_sign_odd, p.slope};
}

// Term j of one element: adds G_j s_j to its slope sum and returns grad * cos(pi k_j t).
template <typename T>
__device__ T backward_term(BackwardState<T>& s, int j, T slope_coeff, bool grad_x,
                           bool grad_coeffs) {
  T weighted = T(0);
  if (grad_x) {
    if (j % 2 == 0) {
      s.slope_even = mul_add(slope_coeff, s.sin_value, s.slope_even);
    } else {
      s.slope_odd = mul_add(slope_coeff, s.sin_value, s.slope_odd);
    }
    dct_advance(s.lambda, s.sin_value, s.sin_difference);
  }
  if (grad_coeffs) {
    weighted = (j % 2 == 0 ? s.weight_even : s.weight_odd) * s.cos_value;
    dct_advance(s.lambda, s.cos_value, s.cos_difference);
  }
  return weighted;
}

template <typename T>
__device__ T backward_grad_x(const BackwardState<T>& s, T grad) {
  const T value = grad * mul_add(s.sin_sign_even, s.slope_even, s.sin_sign_odd * s.slope_odd);
  return s.flows != T(0) ? value : T(0);  // a select: clamp's zero gradient stays 0
}

// Sums v over the 32 lanes of a warp in a fixed butterfly order (every lane gets the sum).
template <typename T>
__device__ T warp_sum(T v) {
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
  return v;
}

// Backward of channel-constant runs: block (tile, channel) takes kThreads * kRunElements
// consecutive elements of its channel (in memory order) and writes, per term, their sum of
// grad * cos into partials[tile, j, channel].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    dct_backward_runs_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                             scalar_t* __restrict__ grad_x, at::opmath_type<scalar_t>* partials,
                             Table<at::opmath_type<scalar_t>> slopes, Channels layout,
                             int64_t per_channel, int64_t tiles,
                             Basis<at::opmath_type<scalar_t>> basis, bool want_grad_x,
                             bool want_grad_coeffs) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t warp_sums[2][kThreads / 32];
  const int64_t tile = int64_t(blockIdx.x) % tiles;
  const int64_t channel = int64_t(blockIdx.x) / tiles;
  const acc_t* coeffs = slopes.data + channel * slopes.stride_c;
  int64_t offsets[kRunElements];
  acc_t grads[kRunElements];
  BackwardState<acc_t> state[kRunElements];
#pragma unroll
  for (int e = 0; e < kRunElements; ++e) {
    const int64_t position = tile * (kThreads * kRunElements) + e * kThreads + threadIdx.x;
    const bool inside = position < per_channel;
    const int64_t row = position / layout.inner;
    offsets[e] = inside ? (row * layout.channels + channel) * layout.inner +
                              (position - row * layout.inner)
                        : -1;
    // Padding elements: x = 0 and grad = 0 add nothing to the sums.
    grads[e] = inside ? static_cast<acc_t>(grad[offsets[e]]) : acc_t(0);
    const acc_t xe = inside ? static_cast<acc_t>(x[offsets[e]]) : acc_t(0);
    state[e] = backward_state(grads[e], xe, basis);
  }
  for (int j = 0; j < slopes.num_coeffs; ++j) {
    const acc_t slope_coeff = want_grad_x ? __ldg(coeffs + j * slopes.stride_j) : acc_t(0);
    acc_t sum = acc_t(0);
#pragma unroll
    for (int e = 0; e < kRunElements; ++e) {
      sum += backward_term(state[e], j, slope_coeff, want_grad_x, want_grad_coeffs);
    }
    if (want_grad_coeffs) {
      // Double-buffered: the sync of term j + 1 separates these writes from the reads of j.
      sum = warp_sum(sum);
      if (threadIdx.x % 32 == 0) warp_sums[j % 2][threadIdx.x / 32] = sum;
      __syncthreads();
      if (threadIdx.x == 0) {
        acc_t block_sum = acc_t(0);
#pragma unroll
        for (int w = 0; w < kThreads / 32; ++w) block_sum += warp_sums[j % 2][w];
        partials[(tile * slopes.num_coeffs + j) * layout.channels + channel] = block_sum;
      }
    }
  }
  if (want_grad_x) {
#pragma unroll
    for (int e = 0; e < kRunElements; ++e) {
      if (offsets[e] >= 0) {
        grad_x[offsets[e]] = static_cast<scalar_t>(backward_grad_x(state[e], grads[e]));
      }
    }
  }
}

// Backward of channels-fastest rows ([rows, channels]): block (row tile, channel tile) takes
// kTileRows x kTileChannels elements; warp w holds rows w, w + 8, ... of 32 consecutive
// channels. Per term, each channel's sum over the tile goes to partials[row tile, j, channel].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    dct_backward_rows_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                             scalar_t* __restrict__ grad_x, at::opmath_type<scalar_t>* partials,
                             Table<at::opmath_type<scalar_t>> slopes, int64_t rows,
                             int64_t channels, int64_t row_tiles,
                             Basis<at::opmath_type<scalar_t>> basis, bool want_grad_x,
                             bool want_grad_coeffs) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t lane_sums[2][kRowLanes][kTileChannels];
  const int64_t row_tile = int64_t(blockIdx.x) % row_tiles;
  const int64_t channel = int64_t(blockIdx.x) / row_tiles * kTileChannels + threadIdx.x % 32;
  const int lane_row = threadIdx.x / 32;
  const bool channel_inside = channel < channels;
  const acc_t* coeffs = slopes.data + (channel_inside ? channel : 0) * slopes.stride_c;
  int64_t offsets[kRowElements];
  acc_t grads[kRowElements];
  BackwardState<acc_t> state[kRowElements];
#pragma unroll
  for (int e = 0; e < kRowElements; ++e) {
    const int64_t row = row_tile * kTileRows + e * kRowLanes + lane_row;
    const bool inside = channel_inside && row < rows;
    offsets[e] = inside ? row * channels + channel : -1;
    grads[e] = inside ? static_cast<acc_t>(grad[offsets[e]]) : acc_t(0);
    const acc_t xe = inside ? static_cast<acc_t>(x[offsets[e]]) : acc_t(0);
    state[e] = backward_state(grads[e], xe, basis);
  }
  for (int j = 0; j < slopes.num_coeffs; ++j) {
    const acc_t slope_coeff = want_grad_x ? __ldg(coeffs + j * slopes.stride_j) : acc_t(0);
    acc_t sum = acc_t(0);
#pragma unroll
    for (int e = 0; e < kRowElements; ++e) {
      sum += backward_term(state[e], j, slope_coeff, want_grad_x, want_grad_coeffs);
    }
    if (want_grad_coeffs) {
      lane_sums[j % 2][lane_row][threadIdx.x % 32] = sum;
      __syncthreads();
      if (lane_row == 0 && channel_inside) {
        acc_t tile_sum = acc_t(0);
#pragma unroll
        for (int r = 0; r < kRowLanes; ++r) tile_sum += lane_sums[j % 2][r][threadIdx.x];
        partials[(row_tile * slopes.num_coeffs + j) * channels + channel] = tile_sum;
      }
    }
  }
  if (want_grad_x) {
#pragma unroll
    for (int e = 0; e < kRowElements; ++e) {
      if (offsets[e] >= 0) {
        grad_x[offsets[e]] = static_cast<scalar_t>(backward_grad_x(state[e], grads[e]));
      }
    }
  }
}

// Pass 2: out[i] = sum over pieces of partials[piece, i], sequential within chunks of
// kSumChunk pieces, then over the chunk sums: a fixed order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dct_sum_pieces_kernel(const T* __restrict__ partials, T* __restrict__ out, int64_t pieces,
                          int64_t width) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < width; i += step) {
    T total = T(0);
    for (int64_t first = 0; first < pieces; first += kSumChunk) {
      T chunk = T(0);
      const int64_t last = first + kSumChunk < pieces ? first + kSumChunk : pieces;
      for (int64_t piece = first; piece < last; ++piece) chunk += partials[piece * width + i];
      total += chunk;
    }
    out[i] = total;
  }
}

// A [channels, K] compute-type table as the kernels read it: [K, channels] (a warp's channels
// contiguous; `table` keeps that copy alive) when channels are fastest, as is otherwise.
template <typename T>
Table<T> kernel_table(at::Tensor& table, const DctChannelView& view) {
  const bool channels_fastest = view.channels > 1 && view.inner == 1;
  if (channels_fastest) table = table.t().contiguous();
  return {table.const_data_ptr<T>(), channels_fastest ? 1 : table.stride(0),
          channels_fastest ? table.stride(0) : 1,
          int(channels_fastest ? table.size(0) : table.size(1))};
}

struct CudaDct {
  using DeviceGuard = c10::cuda::OptionalCUDAGuard;

  static void forward(const DctCall& call, const at::Tensor& y) {
    const int64_t n = y.numel();
    const DctChannelView& view = call.view;
    at::Tensor table = call.table;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "fastact_dct", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const Table<acc_t> t = kernel_table<acc_t>(table, view);
      const Basis<acc_t> basis{acc_t(call.scale), acc_t(call.offset), call.odd, call.clamp};
      const Channels layout{view.inner, view.channels};
      constexpr int64_t pack = Pack<scalar_t>::size;
      int64_t lane_step = -1;  // no pack layout
      if (view.channels == 1 || view.inner % pack == 0) {
        lane_step = 0;
      } else if (view.inner == 1 && view.channels % pack == 0) {
        lane_step = 1;
      }
      const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
      if (lane_step >= 0 && is_16_byte_aligned(call.x) && is_16_byte_aligned(y)) {
        FASTACT_LAUNCH(grid_for(ceil_div(n, pack)), kThreads, 0, stream,
                       dct_forward_packs_kernel<scalar_t>)(
            call.x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), n, t, layout,
            lane_step, basis);
      } else {
        FASTACT_LAUNCH(grid_for(n), kThreads, 0, stream, dct_forward_elements_kernel<scalar_t>)(
            call.x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), n, t, layout,
            basis);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static at::Tensor backward(const DctCall& call, const at::Tensor& grad_x, bool grad_coeffs) {
    const DctChannelView& view = call.view;
    at::Tensor table = call.table;
    const int64_t K = table.size(1);
    const bool channels_fastest = view.channels > 1 && view.inner == 1;
    const int64_t per_channel = view.outer * view.inner;
    const int64_t tiles = channels_fastest
                              ? ceil_div(view.outer, kTileRows)
                              : ceil_div(per_channel, int64_t(kThreads) * kRunElements);
    const int64_t blocks =
        tiles * (channels_fastest ? ceil_div(view.channels, kTileChannels) : view.channels);
    TORCH_CHECK(blocks < (int64_t(1) << 31), "fastact.dct_activation_backward: x is too large");
    const at::TensorOptions compute_options = table.options();
    at::Tensor partials = grad_coeffs ? at::empty({tiles, K, view.channels}, compute_options)
                                      : at::empty({0}, compute_options);
    at::Tensor sums;
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, call.x.scalar_type(), "fastact_dct_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const Table<acc_t> t = kernel_table<acc_t>(table, view);
          const Basis<acc_t> basis{acc_t(call.scale), acc_t(call.offset), call.odd, call.clamp};
          const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
          const bool want_grad_x = grad_x.defined();
          scalar_t* grad_x_data = want_grad_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
          acc_t* partial_data = grad_coeffs ? partials.mutable_data_ptr<acc_t>() : nullptr;
          const scalar_t* grad = call.grad.const_data_ptr<scalar_t>();
          const scalar_t* x = call.x.const_data_ptr<scalar_t>();
          if (channels_fastest) {
            FASTACT_LAUNCH(blocks, kThreads, 0, stream, dct_backward_rows_kernel<scalar_t>)(
                grad, x, grad_x_data, partial_data, t, view.outer, view.channels, tiles, basis,
                want_grad_x, grad_coeffs);
          } else {
            FASTACT_LAUNCH(blocks, kThreads, 0, stream, dct_backward_runs_kernel<scalar_t>)(
                grad, x, grad_x_data, partial_data, t, Channels{view.inner, view.channels},
                per_channel, tiles, basis, want_grad_x, grad_coeffs);
          }
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          if (grad_coeffs) {
            const int64_t width = K * view.channels;
            sums = at::empty({K, view.channels}, compute_options);
            FASTACT_LAUNCH(grid_for(width), kThreads, 0, stream, dct_sum_pieces_kernel<acc_t>)(
                partials.const_data_ptr<acc_t>(), sums.mutable_data_ptr<acc_t>(), tiles, width);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        });
    return grad_coeffs ? sums.t().contiguous() : at::Tensor();
  }
};

}  // namespace

FASTACT_CUDA_KERNELS(m) { register_dct_kernels<CudaDct>(m); }

}  // namespace fastact::cuda

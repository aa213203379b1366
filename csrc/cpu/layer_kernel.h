// The GmP layer's CPU kernels (its epilogues); compiled once per instruction set by
// csrc/cpu/isa_*.cpp. They compute in Storage<S>::acc_t; 16-bit dtypes go through chunks
// converted in bulk (elementwise.h: load_chunk, store_chunk), so that every loop vectorises.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/elementwise.h"
#include "cpu/isa.h"
#include "cpu/layer_args.h"
#include "cpu/storage.h"
#include "fastact/layer.h"

namespace fastact::cpu::FASTACT_ISA {
namespace {

using FloatLanes8 = float __attribute__((vector_size(32)));
using DoubleLanes8 = double __attribute__((vector_size(64)));

// Values per chunk: whole mask words (and whole groups of 8 for dot_in_fixed_order), 2 KiB of
// stack per float buffer.
constexpr int64_t kChunkValues = 512;

// The bits of one mask word: bit j set where geometric_relu_active(pre[j]), j < count. The
// compare-to-mask instructions where there are some (NaN compares false, as > does).
template <typename A>
FASTACT_HOST_DEVICE uint32_t active_bits(const A* pre, int64_t count) {
#if defined(FASTACT_ISA_VECTOR_BYTES) && FASTACT_ISA_VECTOR_BYTES == 64
  if constexpr (std::is_same_v<A, float>) {
    if (count == 32) {
      const __m512 zero = _mm512_setzero_ps();
      const uint32_t low = _mm512_cmp_ps_mask(_mm512_loadu_ps(pre), zero, _CMP_GT_OQ);
      const uint32_t high = _mm512_cmp_ps_mask(_mm512_loadu_ps(pre + 16), zero, _CMP_GT_OQ);
      return low | high << 16;
    }
  }
#elif defined(FASTACT_ISA_VECTOR_BYTES) && FASTACT_ISA_VECTOR_BYTES == 32
  if constexpr (std::is_same_v<A, float>) {
    if (count == 32) {
      uint32_t bits = 0;
      for (int q = 0; q < 4; ++q) {
        const __m256 greater =
            _mm256_cmp_ps(_mm256_loadu_ps(pre + 8 * q), _mm256_setzero_ps(), _CMP_GT_OQ);
        bits |= uint32_t(_mm256_movemask_ps(greater)) << (8 * q);
      }
      return bits;
    }
  }
#endif
  uint32_t bits = 0;
  for (int64_t j = 0; j < count; ++j) bits |= uint32_t(geometric_relu_active(pre[j])) << j;
  return bits;
}

// One mask word of the backward epilogue, `count` (<= 32) columns: masked = bit ? values : 0
// in the compute type, added to `sums`.
template <typename A>
FASTACT_HOST_DEVICE void masked_word(const A* __restrict values, A* __restrict masked,
                                     A* __restrict sums, uint32_t bits, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    const A g = geometric_relu_masked_grad(values[j], ((bits >> j) & 1u) != 0);
    masked[j] = g;
    sums[j] += g;
  }
}

#if defined(FASTACT_ISA_VECTOR_BYTES) && FASTACT_ISA_VECTOR_BYTES == 64
// A full word with AVX-512's masked moves: out = bit ? grad : 0 as stored (a 16-bit gradient
// round-trips through float exactly), its sums from `values`, grad in float.
template <typename S>
FASTACT_HOST_DEVICE void masked_word_avx512(const float* values, const S* grad, S* out,
                                            float* sums, uint32_t bits) {
  const __mmask16 low = __mmask16(bits), high = __mmask16(bits >> 16);
  const __m512 g_low = _mm512_maskz_mov_ps(low, _mm512_loadu_ps(values));
  const __m512 g_high = _mm512_maskz_mov_ps(high, _mm512_loadu_ps(values + 16));
  _mm512_storeu_ps(sums, _mm512_add_ps(_mm512_loadu_ps(sums), g_low));
  _mm512_storeu_ps(sums + 16, _mm512_add_ps(_mm512_loadu_ps(sums + 16), g_high));
  if constexpr (sizeof(S) == 2) {
    _mm512_storeu_si512(out, _mm512_maskz_mov_epi16(__mmask32(bits), _mm512_loadu_si512(grad)));
  } else {
    _mm512_storeu_ps(reinterpret_cast<float*>(out), g_low);
    _mm512_storeu_ps(reinterpret_cast<float*>(out) + 16, g_high);
  }
}
#endif

// One channel's row of the radial step: returns G'_c . u_c (eight partial sums in a fixed
// order: vectorises, and the result depends only on n), then scales G'_c by radius in place and
// writes weight_c = radius u_c unless weight is null.
template <typename S, typename A = typename Storage<S>::acc_t>
FASTACT_HOST_DEVICE A radial_row(S* grad_u, const S* u, S* weight, A radius, int64_t n) {
  static_assert(kChunkValues % 8 == 0);
  // The eight partial sums as one vector: GCC keeps an array of them on the stack.
  using Partials = std::conditional_t<std::is_same_v<A, float>, FloatLanes8, DoubleLanes8>;
  Partials partial = Partials{};
  A tail = A(0);
  A grad_buffer[kChunkValues];
  A u_buffer[kChunkValues];
  for (int64_t first = 0; first < n; first += kChunkValues) {
    const int64_t count = std::min(kChunkValues, n - first);
    A* __restrict g = grad_buffer;
    const A* __restrict v = u_buffer;
    if constexpr (std::is_same_v<S, A>) {
      g = grad_u + first;
      v = u + first;
    } else {
      load_chunk(grad_u + first, grad_buffer, count);
      load_chunk(u + first, u_buffer, count);
    }
    int64_t k = 0;
    for (; k + 8 <= count; k += 8) {
      Partials a, b;
      std::memcpy(&a, g + k, sizeof(a));
      std::memcpy(&b, v + k, sizeof(b));
      partial += a * b;
    }
    for (; k < count; ++k) tail += g[k] * v[k];  // the last chunk only
    for (k = 0; k < count; ++k) g[k] *= radius;
    if constexpr (!std::is_same_v<S, A>) store_chunk(grad_buffer, grad_u + first, count);
    if (weight != nullptr) {
      if constexpr (std::is_same_v<S, A>) {
        for (k = 0; k < count; ++k) weight[first + k] = radius * v[k];
      } else {
        for (k = 0; k < count; ++k) u_buffer[k] *= radius;
        store_chunk(u_buffer, weight + first, count);
      }
    }
  }
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7])) + tail;
}

}  // namespace

// z = radius * relu(z + bias) in place over the task's rows and mask words, and the mask.
void geometric_relu_epilogue(const EpilogueForward& args) {
  const OutputBlock& block = args.block;
  dispatch_storage(block.dtype, [&](auto storage) {
    using S = decltype(storage);
    using A = typename Storage<S>::acc_t;
    const A* radius = static_cast<const A*>(args.radius);
    const A* bias = static_cast<const A*>(args.bias);
    const int64_t end_column = std::min(block.word_end * 32, block.cols);
    A buffer[kChunkValues];
    for (int64_t row = block.row_begin; row < block.row_end; ++row) {
      S* z = static_cast<S*>(args.z) + row * block.cols;
      int32_t* mask = args.mask + row * block.words_per_row;
      for (int64_t first = block.word_begin * 32; first < end_column; first += kChunkValues) {
        const int64_t count = std::min(kChunkValues, end_column - first);
        A* __restrict values = buffer;
        if constexpr (std::is_same_v<S, A>) {
          values = z + first;
        } else {
          load_chunk(z + first, buffer, count);
        }
        for (int64_t j = 0; j < count; ++j) values[j] += bias[first + j];
        for (int64_t w = 0; 32 * w < count; ++w) {
          const int64_t bits = std::min<int64_t>(32, count - 32 * w);
          mask[first / 32 + w] = int32_t(active_bits(values + 32 * w, bits));
        }
        for (int64_t j = 0; j < count; ++j) {
          values[j] = geometric_relu_output(radius[first + j], values[j]);
        }
        if constexpr (!std::is_same_v<S, A>) store_chunk(buffer, z + first, count);
      }
    }
  });
}

// grad_masked = mask ? grad : 0 over the task's rows and words; their column sums into `sums`.
void geometric_relu_epilogue_backward(const EpilogueBackward& args) {
  const OutputBlock& block = args.block;
  dispatch_storage(block.dtype, [&](auto storage) {
    using S = decltype(storage);
    using A = typename Storage<S>::acc_t;
    A* sums = static_cast<A*>(args.sums);
    const int64_t first_column = block.word_begin * 32;
    const int64_t end_column = std::min(block.word_end * 32, block.cols);
    for (int64_t m = first_column; m < end_column; ++m) sums[m] = A(0);
    A buffer[kChunkValues];
    A masked_buffer[kChunkValues];
    for (int64_t row = block.row_begin; row < block.row_end; ++row) {
      const S* grad = static_cast<const S*>(args.grad) + row * block.cols;
      S* out = static_cast<S*>(args.grad_masked) + row * block.cols;
      const int32_t* mask = args.mask + row * block.words_per_row;
      for (int64_t first = first_column; first < end_column; first += kChunkValues) {
        const int64_t count = std::min(kChunkValues, end_column - first);
        const A* values = buffer;
        A* masked = masked_buffer;
        if constexpr (std::is_same_v<S, A>) {
          values = grad + first;
          masked = out + first;
        } else {
          load_chunk(grad + first, buffer, count);
        }
        for (int64_t w = 0; 32 * w < count; ++w) {
          const int64_t at = first + 32 * w;
          const uint32_t bits = uint32_t(mask[at / 32]);
#if defined(FASTACT_ISA_VECTOR_BYTES) && FASTACT_ISA_VECTOR_BYTES == 64
          if constexpr (std::is_same_v<A, float>) {
            if (count - 32 * w >= 32) {
              masked_word_avx512(values + 32 * w, grad + at, out + at, sums + at, bits);
              continue;
            }
          }
#endif
          const int64_t columns = std::min<int64_t>(32, count - 32 * w);
          masked_word(values + 32 * w, masked + 32 * w, sums + at, bits, columns);
          if constexpr (!std::is_same_v<S, A>) store_chunk(masked + 32 * w, out + at, columns);
        }
      }
    }
  });
}

// The per-channel step of the backward (fastact/layer.h; layer_args.h: RadialBackward).
void geometric_relu_radial_backward(const RadialBackward& args) {
  dispatch_storage(args.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    const A* partial = static_cast<const A*>(args.partial);
    const S* bias = static_cast<const S*>(args.bias);
    S* grad_bias = static_cast<S*>(args.grad_bias);
    for (int64_t c = args.channel_begin; c < args.channel_end; ++c) {
      const A radius = T::load(static_cast<const S*>(args.radius)[c]);
      A bias_term = A(0);
      A sum_all = A(0);
      for (int64_t p = 0; p < args.positions; ++p) {
        const A s = layer_column_sum(partial + c * args.sum_stride_c + p * args.sum_stride_p,
                                     args.blocks, args.cols);
        sum_all += s;
        if (bias != nullptr) {
          bias_term += T::load(bias[c * args.bias_stride_c + p * args.bias_stride_p]) * s;
        }
        if (args.bias_per_position) grad_bias[c * args.positions + p] = T::store(radius * s);
      }
      if (!args.bias_per_position) grad_bias[c] = T::store(radius * sum_all);
      S* weight = args.weight == nullptr ? nullptr : static_cast<S*>(args.weight) + c * args.fan_in;
      const A dot = radial_row(static_cast<S*>(args.grad_u) + c * args.fan_in,
                               static_cast<const S*>(args.u) + c * args.fan_in, weight, radius,
                               args.fan_in);
      static_cast<S*>(args.grad_radius)[c] = T::store(dot + bias_term);
    }
  });
}

}  // namespace fastact::cpu::FASTACT_ISA

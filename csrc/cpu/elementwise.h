// Elementwise loops over a TensorIterator block, compiled per instruction set: this header
// is included only by kernel headers, inside an isa_<name>.cpp translation unit, so every
// function here lives in that instruction set's namespace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "cpu/isa.h"
#include "cpu/storage.h"

namespace fastact::cpu::FASTACT_ISA {

// Bulk conversions of n elements between a storage type and its compute type. Separate
// plain loops vectorise far better than conversions fused into the op's loop; F16C converts
// eight halves per instruction where the instruction set has it.
template <typename S>
FASTACT_HOST_DEVICE void load_chunk(const S* __restrict src,
                                    typename Storage<S>::acc_t* __restrict dst, int64_t n) {
#if defined(FASTACT_ISA_HAS_F16C)
  if constexpr (std::is_same_v<S, Float16Bits>) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m128i half8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(half8));
    }
    for (; i < n; ++i) dst[i] = Storage<S>::load(src[i]);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = Storage<S>::load(src[i]);
}

template <typename S>
FASTACT_HOST_DEVICE void store_chunk(const typename Storage<S>::acc_t* __restrict src,
                                     S* __restrict dst, int64_t n) {
#if defined(FASTACT_ISA_HAS_F16C)
  if constexpr (std::is_same_v<S, Float16Bits>) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m128i half8 = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), half8);
    }
    for (; i < n; ++i) dst[i] = Storage<S>::store(src[i]);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = Storage<S>::store(src[i]);
}

// out[i] = op(in_0[i], ..., in_{N-1}[i]) over one TensorIterator 2-D block, computing in
// Storage<S>::acc_t. Rows whose tensors are all contiguous run plain indexed loops the
// compiler vectorises (16-bit types through a stack buffer of floats: convert, compute,
// convert back); other rows follow the strides, so a strided tensor is never copied.
template <typename S, size_t... I, typename Op>
FASTACT_HOST_DEVICE void map_elements(char** data, const int64_t* strides, int64_t n0, int64_t n1,
                                      std::index_sequence<I...>, Op op) {
  using T = Storage<S>;
  using acc_t = typename T::acc_t;
  constexpr int ntensors = 1 + sizeof...(I);
  constexpr int64_t kChunk = 512;
  for (int64_t j = 0; j < n1; ++j) {
    char* out = data[0] + j * strides[ntensors];
    const char* in[] = {(data[1 + I] + j * strides[ntensors + 1 + I])...};
    const bool contiguous = strides[0] == int64_t(sizeof(S)) &&
                            ((strides[1 + I] == int64_t(sizeof(S))) && ...);
    if (contiguous && std::is_same_v<S, acc_t>) {
      acc_t* __restrict typed_out = reinterpret_cast<acc_t*>(out);
      for (int64_t i = 0; i < n0; ++i) {
        typed_out[i] = op(reinterpret_cast<const acc_t*>(in[I])[i]...);
      }
    } else if (contiguous) {
      acc_t in_chunk[sizeof...(I)][kChunk];
      acc_t out_chunk[kChunk];
      for (int64_t base = 0; base < n0; base += kChunk) {
        const int64_t m = std::min(kChunk, n0 - base);
        (load_chunk(reinterpret_cast<const S*>(in[I]) + base, in_chunk[I], m), ...);
        for (int64_t i = 0; i < m; ++i) out_chunk[i] = op(in_chunk[I][i]...);
        store_chunk(out_chunk, reinterpret_cast<S*>(out) + base, m);
      }
    } else {
      for (int64_t i = 0; i < n0; ++i) {
        *reinterpret_cast<S*>(out + i * strides[0]) = T::store(
            op(T::load(*reinterpret_cast<const S*>(in[I] + i * strides[1 + I]))...));
      }
    }
  }
}

// An ElementwiseLoop body for any float dtype: `op` takes `num_inputs` values.
template <size_t num_inputs, typename Op>
FASTACT_HOST_DEVICE void map_elements_any_dtype(c10::ScalarType dtype, char** data,
                                                const int64_t* strides, int64_t n0, int64_t n1,
                                                Op op) {
  dispatch_storage(dtype, [&](auto storage) {
    map_elements<decltype(storage)>(data, strides, n0, n1,
                                    std::make_index_sequence<num_inputs>{}, op);
  });
}

}  // namespace fastact::cpu::FASTACT_ISA

// Elementwise loops over a TensorIterator block, compiled per instruction set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "cpu/isa.h"
#include "cpu/storage.h"

namespace fastact::cpu {

// out[i] = op(in_0[i], ..., in_{N-1}[i]) over one TensorIterator 2-D block, computing in
// Storage<S>::acc_t. Rows whose tensors are all contiguous run a plain indexed loop that the
// compiler vectorises for the instruction set of the including translation unit; other
// rows follow the strides, so a strided tensor is never copied.
template <typename S, size_t... I, typename Op>
FASTACT_HOST_DEVICE void map_elements(char** data, const int64_t* strides, int64_t n0, int64_t n1,
                                      std::index_sequence<I...>, Op op) {
  using T = Storage<S>;
  constexpr int ntensors = 1 + sizeof...(I);
  for (int64_t j = 0; j < n1; ++j) {
    char* out = data[0] + j * strides[ntensors];
    const char* in[] = {(data[1 + I] + j * strides[ntensors + 1 + I])...};
    const bool contiguous = strides[0] == int64_t(sizeof(S)) &&
                            ((strides[1 + I] == int64_t(sizeof(S))) && ...);
    if (contiguous) {
      S* __restrict typed_out = reinterpret_cast<S*>(out);
      for (int64_t i = 0; i < n0; ++i) {
        typed_out[i] = T::store(op(T::load(reinterpret_cast<const S*>(in[I])[i])...));
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

}  // namespace fastact::cpu

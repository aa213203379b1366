// Runs a per-instruction-set ElementwiseLoop over tensors: tensors sharing one dense layout as
// flat memory, others with ATen's TensorIterator, which follows any strides and merges
// dimensions that are contiguous together. Both split the work across threads with
// at::parallel_for.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

#include <array>
#include <cstdint>
#include <initializer_list>

#include "cpu/isa.h"
#include "host/common.h"

namespace fastact::cpu {

// A new tensor laid out like `like` (at::empty_like, as the op's fake kernel says) holding
// loop(inputs...) elementwise. All inputs share `like`'s float dtype and shape.
// The loop over the flat memory of `out` and `inputs` (shares_dense_layout), in blocks of
// TensorIterator's grain: building a TensorIterator costs ~1 us, as much as the whole op on
// a small tensor.
inline void map_flat(ElementwiseLoop* loop, const at::Tensor& out,
                     std::initializer_list<at::Tensor> inputs) {
  constexpr size_t kMaxOperands = 4;
  const size_t operands = inputs.size() + 1;
  TORCH_INTERNAL_ASSERT(operands <= kMaxOperands);
  const int64_t element_size = out.element_size();
  std::array<char*, kMaxOperands> base{static_cast<char*>(out.data_ptr())};
  size_t k = 1;
  for (const at::Tensor& t : inputs) {
    base[k++] = static_cast<char*>(const_cast<void*>(t.const_data_ptr()));
  }
  // Inner strides (the element size), then outer strides (unused: one row per block).
  std::array<int64_t, 2 * kMaxOperands> strides{};
  for (size_t i = 0; i < operands; ++i) strides[i] = element_size;
  const c10::ScalarType dtype = out.scalar_type();
  at::parallel_for(0, out.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    std::array<char*, kMaxOperands> data{};
    for (size_t i = 0; i < operands; ++i) data[i] = base[i] + begin * element_size;
    loop(dtype, data.data(), strides.data(), end - begin, 1);
  });
}

inline at::Tensor map_tensors(ElementwiseLoop* loop, const at::Tensor& like,
                              std::initializer_list<at::Tensor> inputs) {
  at::Tensor out = at::empty_like(like);
  if (shares_dense_layout(out, inputs)) {
    map_flat(loop, out, inputs);
    return out;
  }
  at::TensorIteratorConfig config;
  config.add_output(out).check_all_same_dtype(true);
  for (const at::Tensor& input : inputs) config.add_const_input(input);
  at::TensorIterator iter = config.build();
  const c10::ScalarType dtype = like.scalar_type();
  iter.for_each([&](char** data, const int64_t* strides, int64_t n0, int64_t n1) {
    loop(dtype, data, strides, n0, n1);
  });
  return out;
}

}  // namespace fastact::cpu

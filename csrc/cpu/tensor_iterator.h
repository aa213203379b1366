// Runs a per-instruction-set ElementwiseLoop over tensors with ATen's TensorIterator, which
// follows any strides, merges dimensions that are contiguous together, and splits the work
// across threads with at::parallel_for.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>

#include <initializer_list>

#include "cpu/isa.h"

namespace fastact::cpu {

// A new tensor laid out like `like` (at::empty_like, as the op's fake kernel says) holding
// loop(inputs...) elementwise. All inputs share `like`'s float dtype and shape.
inline at::Tensor map_tensors(ElementwiseLoop* loop, const at::Tensor& like,
                              std::initializer_list<at::Tensor> inputs) {
  at::Tensor out = at::empty_like(like);
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

// Arguments of the GmP layer's CPU kernels (csrc/cpu/layer_kernel.h), shared by the glue and
// every instruction-set copy of the kernels. Plain data only: nothing here is compiled per ISA.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace fastact::cpu {

// The layer's output seen as `rows` x `cols` dense memory (a row per sample), and the activity
// mask as rows x words_per_row 32-bit words: bit j % 32 of word j / 32 is column j.
struct OutputBlock {
  c10::ScalarType dtype;
  int64_t cols;
  int64_t words_per_row;
  int64_t row_begin, row_end;    // rows of this task
  int64_t word_begin, word_end;  // its columns, in whole mask words
};

// One pass of the forward epilogue: z = radius * relu(z + bias) in place, and the mask.
// `radius` and `bias` hold a value per column in the compute type (float, double for double).
struct EpilogueForward {
  OutputBlock block;
  void* z;
  const void* radius;
  const void* bias;
  int32_t* mask;
};

// One pass of the backward epilogue: grad_masked = mask ? grad : 0, and the column sums over the
// task's rows into `sums` (compute type, a row of cols values, of which the task owns its words'
// columns).
struct EpilogueBackward {
  OutputBlock block;
  const void* grad;
  const int32_t* mask;
  void* grad_masked;
  void* sums;
};

// The per-channel step of the backward (fastact/layer.h has the formulas) for channels
// [begin, end): grad_u holds G' = g'^T x ([channels, fan_in]) on entry and dL/du on return,
// `weight` (radius * u) is skipped when null, and partial holds the backward epilogue's column
// sums per block of rows (compute type, [blocks, cols]) with column(c, p) = c * sum_stride_c +
// p * sum_stride_p. Without bias, `bias` is null and only the bias term drops out; bias per
// channel has bias_stride_p = 0.
struct RadialBackward {
  c10::ScalarType dtype;
  int64_t fan_in;
  int64_t positions;
  int64_t channel_begin, channel_end;
  void* grad_u;
  const void* u;
  const void* radius;
  const void* partial;
  int64_t blocks, cols;
  int64_t sum_stride_c, sum_stride_p;
  const void* bias;
  int64_t bias_stride_c, bias_stride_p;
  bool bias_per_position;
  void* grad_radius;
  void* grad_bias;
  void* weight;
};

// The kernels' function types (csrc/cpu/layer_kernel.h has what each computes).
using EpilogueForwardKernel = void(const EpilogueForward& args);
using EpilogueBackwardKernel = void(const EpilogueBackward& args);
using RadialBackwardKernel = void(const RadialBackward& args);

}  // namespace fastact::cpu

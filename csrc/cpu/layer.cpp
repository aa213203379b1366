// The GmP layer on CPU: the Epilogues of csrc/host/layer.h around the per-instruction-set
// kernels of layer_kernel.h. Work is split with at::parallel_for; the reductions behind
// parameter gradients use blocks fixed by the shapes alone, summed in a fixed order, so they do
// not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"
#include "cpu/layer_args.h"
#include "cpu/parallel.h"
#include "host/layer.h"

FASTACT_DECLARE_CPU_KERNEL(EpilogueForwardKernel, geometric_relu_epilogue)
FASTACT_DECLARE_CPU_KERNEL(EpilogueBackwardKernel, geometric_relu_epilogue_backward)
FASTACT_DECLARE_CPU_KERNEL(RadialBackwardKernel, geometric_relu_radial_backward)

namespace fastact::cpu {
namespace {

// Output columns per task, in whole mask words.
constexpr int64_t kTaskWords = 128;

// Runs fn(OutputBlock) over tasks of (a block of rows) x (kTaskWords mask words).
template <typename Fn>
void for_output_blocks(c10::ScalarType dtype, const OutputGeometry& geometry,
                       int64_t rows_per_block, Fn fn) {
  const int64_t words = geometry.words_per_row();
  const int64_t word_chunks = (words + kTaskWords - 1) / kTaskWords;
  const int64_t row_blocks = (geometry.rows + rows_per_block - 1) / rows_per_block;
  const int64_t elements_per_task = rows_per_block * std::min(geometry.cols, 32 * kTaskWords);
  at::parallel_for(
      0, row_blocks * word_chunks, grain_for(elements_per_task), [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t row_block = task / word_chunks;
          const int64_t chunk = task % word_chunks;
          fn(row_block, OutputBlock{dtype, geometry.cols, words, row_block * rows_per_block,
                                    std::min(geometry.rows, (row_block + 1) * rows_per_block),
                                    chunk * kTaskWords, std::min(words, (chunk + 1) * kTaskWords)});
        }
      });
}

struct CpuEpilogues {
  using DeviceGuard = NoDeviceGuard;
  static constexpr int64_t kMaxSumBlocks = 64;

  static void forward(const at::Tensor& z, const OutputGeometry& geometry,
                      const at::Tensor& radius_columns, const at::Tensor& bias_columns,
                      const at::Tensor& mask) {
    const auto kernel = geometric_relu_epilogue_for_this_cpu();
    for_output_blocks(z.scalar_type(), geometry, 1, [&](int64_t, const OutputBlock& block) {
      kernel(EpilogueForward{block, z.mutable_data_ptr(), radius_columns.const_data_ptr(),
                             bias_columns.const_data_ptr(), mask.mutable_data_ptr<int32_t>()});
    });
  }

  static void backward(const at::Tensor& grad, const at::Tensor& mask,
                       const OutputGeometry& geometry, int64_t rows_per_block,
                       const at::Tensor& grad_masked, const at::Tensor& partial) {
    const auto kernel = geometric_relu_epilogue_backward_for_this_cpu();
    for_output_blocks(grad.scalar_type(), geometry, rows_per_block,
                      [&](int64_t row_block, const OutputBlock& block) {
                        kernel(EpilogueBackward{
                            block, grad.const_data_ptr(), mask.const_data_ptr<int32_t>(),
                            grad_masked.mutable_data_ptr(), partial[row_block].mutable_data_ptr()});
                      });
  }

  static void radial(const RadialTensors& t, const OutputGeometry& geometry) {
    const int64_t fan_in = t.u.size(1);
    const int64_t blocks = t.partial.size(0);
    const auto kernel = geometric_relu_radial_backward_for_this_cpu();
    at::parallel_for(
        0, geometry.channels, grain_for(fan_in + blocks * geometry.positions),
        [&](int64_t begin, int64_t end) {
          kernel(RadialBackward{t.u.scalar_type(),
                                fan_in,
                                geometry.positions,
                                begin,
                                end,
                                t.grad_u.mutable_data_ptr(),
                                t.u.const_data_ptr(),
                                t.radius.const_data_ptr(),
                                t.partial.const_data_ptr(),
                                blocks,
                                geometry.cols,
                                geometry.stride_channel(),
                                geometry.stride_position(),
                                t.bias.defined() ? t.bias.const_data_ptr() : nullptr,
                                t.bias_stride_c,
                                t.bias_stride_p,
                                t.bias_per_position,
                                t.grad_radius.mutable_data_ptr(),
                                t.grad_bias.mutable_data_ptr(),
                                t.weight.defined() ? t.weight.mutable_data_ptr() : nullptr});
        });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CPU, m) { register_layer_kernels<CpuEpilogues>(m); }

}  // namespace fastact::cpu

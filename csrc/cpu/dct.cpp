// DCT-basis activation on CPU: ATen glue around the per-instruction-set kernels of
// dct_kernel.h. The coefficient gradient is two-pass: the backward kernels write partial sums
// over fixed pieces of each channel, summed here in a fixed order.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "cpu/dct_tasks.h"
#include "cpu/isa.h"
#include "dct_host.h"

FASTACT_DECLARE_CPU_KERNEL(DctForwardTasks, dct_forward_tasks)
FASTACT_DECLARE_CPU_KERNEL(DctBackwardTasks, dct_backward_tasks)

namespace fastact::cpu {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The accumulators one backward task range needs (see DctBackwardTasks).
int64_t scratch_size(const DctProblem& p, int64_t lanes) {
  return p.num_coeffs * (p.lanes_are_channels ? p.channel_block + lanes : lanes);
}

DctProblem make_problem(const at::Tensor& dense, const at::Tensor& coeffs, int64_t channel_dim,
                        double lo, double hi, bool odd, bool clamp) {
  const DctChannelView view = dct_channel_view(dense, channel_dim, coeffs.size(0));
  const int64_t K = coeffs.size(1);
  const int64_t V = dense.scalar_type() == at::kDouble ? kDctLanesDouble : kDctLanesFloat;
  DctProblem p{};
  p.outer = view.outer;
  p.channels = view.channels;
  p.inner = view.inner;
  p.num_coeffs = K;
  p.lanes_are_channels = view.channels > 1 && view.inner == 1;
  if (p.lanes_are_channels) {
    p.columns = ceil_div(p.channels, V) * V;
    p.piece_length = std::max(kDctPieceRowsMin, kDctPieceRowsPerCoeff * K);
    p.num_pieces = ceil_div(p.outer, p.piece_length);
    p.channel_block = std::min(p.columns, std::max(V, kDctBlockAccumulators / K / V * V));
  } else {
    p.columns = p.channels;
    p.piece_length = kDctPiecePositions;
    p.num_pieces = ceil_div(p.outer * p.inner, p.piece_length);
    p.channel_block = 0;
  }
  p.scale = dct_scale(lo, hi);
  p.offset = dct_offset(lo, hi);
  p.odd = odd;
  p.clamp = clamp;
  return p;
}

// A [channels, K] table as the kernels read it: transposed to [K, columns] (zero padded) when
// lane blocks run across channels, as is otherwise.
at::Tensor kernel_table(const at::Tensor& table, const DctProblem& p) {
  if (!p.lanes_are_channels) return table;
  at::Tensor transposed = at::zeros({p.num_coeffs, p.columns}, table.options());
  transposed.narrow(1, 0, p.channels).copy_(table.t());
  return transposed;
}

// row[i] += sum over pieces [first, last) of partials[piece][i], i < width: pairwise halves
// down to runs of up to 16 pieces added in order. A fixed order (independent of the threads),
// with rounding error growing like 16 + log2(pieces) rather than like the number of pieces.
template <typename T>
void add_pieces(const T* partials, int64_t width, int64_t first, int64_t last, T* row) {
  if (last - first <= 16) {
    for (int64_t piece = first; piece < last; ++piece) {
      const T* values = partials + piece * width;
      for (int64_t i = 0; i < width; ++i) row[i] += values[i];
    }
    return;
  }
  const int64_t middle = first + (last - first) / 2;
  std::vector<T> second(width, T(0));
  add_pieces(partials, width, first, middle, row);
  add_pieces(partials, width, middle, last, second.data());
  for (int64_t i = 0; i < width; ++i) row[i] += second[i];
}

// out[c, j] = sum over pieces of partials[piece, j, c]. Each thread takes a range of terms j.
template <typename T>
void sum_partials(const T* partials, const DctProblem& p, T* out) {
  const int64_t K = p.num_coeffs, C = p.channels;
  at::parallel_for(0, K, 1, [&](int64_t j_begin, int64_t j_end) {
    std::vector<T> row(C), gathered(p.num_pieces * C);
    for (int64_t j = j_begin; j < j_end; ++j) {
      for (int64_t piece = 0; piece < p.num_pieces; ++piece) {
        std::copy_n(partials + (piece * K + j) * C, C, gathered.data() + piece * C);
      }
      std::fill(row.begin(), row.end(), T(0));
      add_pieces(gathered.data(), C, 0, p.num_pieces, row.data());
      for (int64_t c = 0; c < C; ++c) out[c * K + j] = row[c];
    }
  });
}

at::Tensor dct_activation_cpu(const at::Tensor& x, const at::Tensor& coeffs, int64_t channel_dim,
                              double lo, double hi, bool odd, bool clamp) {
  check_dct_arguments("dct_activation", x, coeffs, channel_dim, lo, hi);
  at::Tensor y = at::empty_like(x);
  if (y.numel() == 0) return y;
  const at::Tensor xd = dct_in_layout(x, y);
  const DctProblem p = make_problem(y, coeffs, channel_dim, lo, hi, odd, clamp);
  const at::Tensor table = kernel_table(dct_value_table(coeffs, dct_compute_type(x)), p);
  DctForwardTasks* kernel = dct_forward_tasks_for_this_cpu();
  // Tasks: rows of channels, or pieces of kDctPiecePositions elements of one channel.
  const int64_t tasks = p.lanes_are_channels ? p.outer : p.channels * p.num_pieces;
  const int64_t grain = p.lanes_are_channels ? std::max<int64_t>(1, kDctPiecePositions / p.channels) : 1;
  const c10::ScalarType dtype = x.scalar_type();
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    kernel(dtype, p, table.const_data_ptr(), xd.const_data_ptr(), y.mutable_data_ptr(), begin, end);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> dct_activation_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& coeffs, int64_t channel_dim,
    double lo, double hi, bool odd, bool clamp, std::array<bool, 2> output_mask) {
  check_dct_arguments("dct_activation_backward", x, coeffs, channel_dim, lo, hi);
  check_matches("dct_activation_backward", "grad_out", grad_out, "x", x);
  const bool need_grad_x = output_mask[0], need_grad_coeffs = output_mask[1];
  at::Tensor grad_x = need_grad_x ? at::empty_like(x) : at::empty({0}, x.options());
  if (x.numel() == 0 || !(need_grad_x || need_grad_coeffs)) {
    return {grad_x, need_grad_coeffs ? at::zeros_like(coeffs) : at::empty({0}, coeffs.options())};
  }
  const at::Tensor layout = need_grad_x ? grad_x : dct_dense(x);
  const at::Tensor xd = dct_in_layout(x, layout);
  const at::Tensor gd = dct_in_layout(grad_out, layout);
  const DctProblem p = make_problem(layout, coeffs, channel_dim, lo, hi, odd, clamp);
  const c10::ScalarType compute = dct_compute_type(x);
  const at::Tensor table = kernel_table(dct_slope_table(coeffs, compute, odd, p.scale), p);
  const at::TensorOptions compute_options = coeffs.options().dtype(compute);
  const at::Tensor partials = need_grad_coeffs
                                  ? at::empty({p.num_pieces, p.num_coeffs, p.channels}, compute_options)
                                  : at::Tensor();
  const int64_t tasks = p.lanes_are_channels
                            ? p.num_pieces * ceil_div(p.channels, p.channel_block)
                            : p.channels * p.num_pieces;
  const int64_t lanes = compute == at::kDouble ? kDctLanesDouble : kDctLanesFloat;
  DctBackwardTasks* kernel = dct_backward_tasks_for_this_cpu();
  const c10::ScalarType dtype = x.scalar_type();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> scratch(scratch_size(p, lanes));  // room for either type
    kernel(dtype, p, table.const_data_ptr(), gd.const_data_ptr(), xd.const_data_ptr(),
           need_grad_x ? grad_x.mutable_data_ptr() : nullptr,
           need_grad_coeffs ? partials.mutable_data_ptr() : nullptr, scratch.data(), begin, end);
  });
  if (!need_grad_coeffs) return {grad_x, at::empty({0}, coeffs.options())};
  at::Tensor grad_coeffs = at::empty({p.channels, p.num_coeffs}, compute_options);
  if (compute == at::kDouble) {
    sum_partials(partials.const_data_ptr<double>(), p, grad_coeffs.mutable_data_ptr<double>());
  } else {
    sum_partials(partials.const_data_ptr<float>(), p, grad_coeffs.mutable_data_ptr<float>());
  }
  return {grad_x, grad_coeffs.to(coeffs.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CPU, m) {
  m.impl("dct_activation", &dct_activation_cpu);
  m.impl("dct_activation_backward", &dct_activation_backward_cpu);
}

}  // namespace fastact::cpu

// DCT-basis activation on CPU: the Kernels of csrc/host/dct.h around the per-instruction-set
// kernels of dct_kernel.h. The coefficient gradient is two-pass: the backward kernels write
// partial sums over fixed pieces of each channel, summed here in a fixed order.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "cpu/dct_tasks.h"
#include "cpu/isa.h"
#include "host/dct.h"

FASTACT_DECLARE_CPU_KERNEL(DctForwardTasks, dct_forward_tasks)
FASTACT_DECLARE_CPU_KERNEL(DctBackwardTasks, dct_backward_tasks)

namespace fastact::cpu {
namespace {

// The accumulators one backward task range needs (see DctBackwardTasks).
int64_t scratch_size(const DctProblem& p, int64_t lanes) {
  return p.num_coeffs * (p.lanes_are_channels ? p.channel_block + lanes : lanes);
}

DctProblem make_problem(const DctCall& call) {
  const DctChannelView& view = call.view;
  const int64_t K = call.table.size(1);
  const int64_t V = call.compute == at::kDouble ? kDctLanesDouble : kDctLanesFloat;
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
  p.scale = call.scale;
  p.offset = call.offset;
  p.odd = call.odd;
  p.clamp = call.clamp;
  return p;
}

// Work per parallel range: at least this many elements, so that a small tensor runs on the
// calling thread (waking the pool costs more than its work).
constexpr int64_t kParallelElements = 16384;

int64_t grain_for(int64_t task_elements) {
  return std::max<int64_t>(1, kParallelElements / std::max<int64_t>(1, task_elements));
}

// A [channels, K] table as the kernels read it: transposed to [K, columns] (zero padded) when
// lane blocks run across channels, as is otherwise. A loop, not ATen ops: they cost ~10 us.
template <typename T>
void transpose_padded(const T* table, const DctProblem& p, T* out) {
  for (int64_t j = 0; j < p.num_coeffs; ++j) {
    T* row = out + j * p.columns;
    for (int64_t c = 0; c < p.channels; ++c) row[c] = table[c * p.num_coeffs + j];
    std::fill(row + p.channels, row + p.columns, T(0));
  }
}

at::Tensor kernel_table(const at::Tensor& table, const DctProblem& p) {
  if (!p.lanes_are_channels) return table;
  at::Tensor transposed = at::empty({p.num_coeffs, p.columns}, table.options());
  if (table.scalar_type() == at::kDouble) {
    transpose_padded(table.const_data_ptr<double>(), p, transposed.mutable_data_ptr<double>());
  } else {
    transpose_padded(table.const_data_ptr<float>(), p, transposed.mutable_data_ptr<float>());
  }
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
  at::parallel_for(0, K, grain_for(p.num_pieces * C), [&](int64_t j_begin, int64_t j_end) {
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

struct CpuDct {
  using DeviceGuard = NoDeviceGuard;

  static void forward(const DctCall& call, const at::Tensor& y) {
    const DctProblem p = make_problem(call);
    const at::Tensor table = kernel_table(call.table, p);
    DctForwardTasks* kernel = dct_forward_tasks_for_this_cpu();
    // Tasks: rows of channels, or pieces of kDctPiecePositions elements of one channel.
    const int64_t tasks = p.lanes_are_channels ? p.outer : p.channels * p.num_pieces;
    const int64_t grain =
        grain_for(p.lanes_are_channels ? p.channels
                                       : std::min(p.piece_length, p.outer * p.inner));
    const c10::ScalarType dtype = call.x.scalar_type();
    at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
      kernel(dtype, p, table.const_data_ptr(), call.x.const_data_ptr(), y.mutable_data_ptr(),
             begin, end);
    });
  }

  static at::Tensor backward(const DctCall& call, const at::Tensor& grad_x, bool grad_coeffs) {
    const DctProblem p = make_problem(call);
    const at::Tensor table = kernel_table(call.table, p);
    const at::TensorOptions compute_options = call.table.options();
    const at::Tensor partials =
        grad_coeffs ? at::empty({p.num_pieces, p.num_coeffs, p.channels}, compute_options)
                    : at::Tensor();
    const int64_t tasks = p.lanes_are_channels
                              ? p.num_pieces * ceil_div(p.channels, p.channel_block)
                              : p.channels * p.num_pieces;
    const int64_t lanes = call.compute == at::kDouble ? kDctLanesDouble : kDctLanesFloat;
    DctBackwardTasks* kernel = dct_backward_tasks_for_this_cpu();
    const c10::ScalarType dtype = call.x.scalar_type();
    const int64_t task_elements = p.lanes_are_channels
                                      ? std::min(p.piece_length, p.outer) * p.channel_block
                                      : std::min(p.piece_length, p.outer * p.inner);
    at::parallel_for(0, tasks, grain_for(task_elements), [&](int64_t begin, int64_t end) {
      std::vector<double> scratch(scratch_size(p, lanes));  // room for either type
      kernel(dtype, p, table.const_data_ptr(), call.grad.const_data_ptr(),
             call.x.const_data_ptr(), grad_x.defined() ? grad_x.mutable_data_ptr() : nullptr,
             grad_coeffs ? partials.mutable_data_ptr() : nullptr, scratch.data(), begin, end);
    });
    if (!grad_coeffs) return {};
    at::Tensor sums = at::empty({p.channels, p.num_coeffs}, compute_options);
    if (call.compute == at::kDouble) {
      sum_partials(partials.const_data_ptr<double>(), p, sums.mutable_data_ptr<double>());
    } else {
      sum_partials(partials.const_data_ptr<float>(), p, sums.mutable_data_ptr<float>());
    }
    return sums;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CPU, m) { register_dct_kernels<CpuDct>(m); }

}  // namespace fastact::cpu

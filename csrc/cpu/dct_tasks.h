// DCT-basis activation on CPU: how the glue (dct.cpp) hands work to the per-instruction-set
// kernels (dct_kernel.h). Plain data only: this header is compiled for every instruction set.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace fastact::cpu {

// Elements per lane block (see dct_kernel.h): 256 bytes of the compute type. Fewer lanes leave
// the recurrence latency-bound; more spill the block's state out of the registers.
constexpr int64_t kDctLanesFloat = 64;
constexpr int64_t kDctLanesDouble = 32;

// Coefficient-gradient partial sums are taken over fixed pieces of each channel's elements,
// chosen from the shape alone, so that they and their fixed-order sum do not depend on how
// at::parallel_for splits the tasks among threads.
constexpr int64_t kDctPiecePositions = 16384;  // channel-constant runs: elements per piece
constexpr int64_t kDctPieceRowsPerCoeff = 8;   // channels-fastest: rows per piece, >= 128,
constexpr int64_t kDctPieceRowsMin = 128;      // so partials stay <= 1/4 of x's bytes at K = 16
// Per backward task, K x channels of partials: 32 KiB of float, in L1, and whole rows of 1024
// float channels up to K = 8 (memory read in order).
constexpr int64_t kDctBlockAccumulators = 8192;

// A dense tensor's memory as [outer, channels, inner] (see dct_channel_view) and the tasks.
//  - lanes_are_channels (inner == 1, channels > 1: [N, C], [B, T, C], channels_last): lane
//    blocks run across consecutive channels; tables are [K, columns] with columns = channels
//    rounded up to a whole lane block (zero padded). Forward task = one row; backward task =
//    (piece of piece_length rows, block of channel_block channels).
//  - otherwise (channel-constant runs of `inner` elements: [N, C, H, W], shared coefficients):
//    lane blocks run along a run with the channel's coefficients broadcast; tables are
//    [channels, K]. Task = (channel, piece of piece_length elements of that channel, in memory
//    order).
// Partial sums are [pieces, K, channels].
struct DctProblem {
  int64_t outer, channels, inner;
  int64_t num_coeffs;
  bool lanes_are_channels;
  int64_t columns;        // row length of the tables
  int64_t piece_length;   // rows or elements per piece
  int64_t num_pieces;
  int64_t channel_block;  // lanes_are_channels backward: channels per task
  double scale, offset;   // t = x * scale + offset
  bool odd, clamp;
};

// y = f(x) for tasks [begin, end); `table` holds the coefficients in the compute type.
using DctForwardTasks = void(c10::ScalarType dtype, const DctProblem& problem, const void* table,
                             const void* x, void* y, int64_t begin, int64_t end);

// grad_x (when not null) and the partial sums of d(coeffs) (when not null; [pieces, K,
// columns] in the compute type) for tasks [begin, end); `table` holds the slope coefficients
// G_j = -pi k_j F_j * scale; `scratch` holds K x (channel_block + lanes) (lanes_are_channels)
// or K x lanes compute-type values.
using DctBackwardTasks = void(c10::ScalarType dtype, const DctProblem& problem, const void* table,
                              const void* grad, const void* x, void* grad_x, void* partials,
                              void* scratch, int64_t begin, int64_t end);

}  // namespace fastact::cpu

// DCT-basis activation CPU kernels: the forward and backward tasks of DctProblem (dct_tasks.h)
// over the lane kernels of dct_lanes.h; compiled once per instruction set by
// csrc/cpu/isa_*.cpp.
#include <cstdint>
#include <type_traits>

#include "cpu/dct_lanes.h"
#include "cpu/dct_tasks.h"
#include "cpu/storage.h"

namespace fastact::cpu::FASTACT_ISA {
namespace dct {

// Calls run(memory offset, n) for the channel-constant runs of one piece of one channel's
// elements, in memory order.
template <typename Run>
FASTACT_HOST_DEVICE void for_each_run_of_piece(const DctProblem& pr, int64_t channel,
                                               int64_t piece, Run run_at) {
  const int64_t per_channel = pr.outer * pr.inner;
  int64_t position = piece * pr.piece_length;
  const int64_t remaining = per_channel - position;
  const int64_t stop = position + (remaining < pr.piece_length ? remaining : pr.piece_length);
  while (position < stop) {
    const int64_t row = position / pr.inner;
    const int64_t in_row = position - row * pr.inner;
    const int64_t run = (pr.inner - in_row < stop - position) ? pr.inner - in_row : stop - position;
    run_at((row * pr.channels + channel) * pr.inner + in_row, run);
    position += run;
  }
}

// Calls block(memory offset, n) for the lane blocks (n <= V) of the same.
template <int V, typename Block>
FASTACT_HOST_DEVICE void for_each_block_of_piece(const DctProblem& pr, int64_t channel,
                                                 int64_t piece, Block block) {
  for_each_run_of_piece(pr, channel, piece, [&](int64_t base, int64_t run) {
    for (int64_t b = 0; b < run; b += V) block(base + b, int(run - b < V ? run - b : V));
  });
}

template <typename S, bool kOdd, bool kClamp>
FASTACT_HOST_DEVICE void forward_tasks(const DctProblem& pr, const typename Storage<S>::acc_t* table,
                                       const S* x, S* y, int64_t begin, int64_t end) {
  using T = typename Storage<S>::acc_t;
  const Domain<T> d{T(pr.scale), T(pr.offset)};
  const int64_t K = pr.num_coeffs;
  if (pr.lanes_are_channels) {
    const int64_t C = pr.channels;
    for (int64_t row = begin; row < end; ++row) {
      forward_run<S, true, kOdd, kClamp>(x + row * C, y + row * C, C, table, pr.columns, K, d);
    }
    return;
  }
  for (int64_t task = begin; task < end; ++task) {
    const int64_t channel = task / pr.num_pieces;
    const T* coeffs = table + channel * K;
    for_each_run_of_piece(pr, channel, task % pr.num_pieces, [&](int64_t at, int64_t n) {
      forward_run<S, false, kOdd, kClamp>(x + at, y + at, n, coeffs, 1, K, d);
    });
  }
}

// Asks for n elements at p ahead of their use (for writing where kWrite).
template <bool kWrite, typename S>
FASTACT_HOST_DEVICE void prefetch(const S* p, int64_t n) {
  constexpr int64_t kLine = 64;
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * int64_t(sizeof(S)); b += kLine) __builtin_prefetch(bytes + b, kWrite);
}

template <typename S, bool kOdd, bool kClamp, bool kGradX, bool kGradCoeffs>
FASTACT_HOST_DEVICE void backward_tasks(const DctProblem& pr, const typename Storage<S>::acc_t* table,
                                        const S* grad, const S* x, S* grad_x,
                                        typename Storage<S>::acc_t* partials,
                                        typename Storage<S>::acc_t* scratch, int64_t begin,
                                        int64_t end) {
  using T = typename Storage<S>::acc_t;
  constexpr int V = lanes<T>();
  const Domain<T> d{T(pr.scale), T(pr.offset)};
  const int64_t K = pr.num_coeffs;
  const int64_t columns = pr.columns;
  if (pr.lanes_are_channels) {
    // Task = (piece of rows, block of channels). Its sums accumulate in `scratch`, rows of
    // channel_block + V: a row length of 4 KiB (1024 float channels) would put term j and
    // j + 1 in the same L1 set and make every load wait on the previous term's store.
    const int64_t C = pr.channels;
    const int64_t stride = pr.channel_block + V;
    const int64_t blocks = (C + pr.channel_block - 1) / pr.channel_block;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t piece = task / blocks;
      const int64_t c_begin = (task % blocks) * pr.channel_block;
      const int64_t c_end = C - c_begin < pr.channel_block ? C : c_begin + pr.channel_block;
      if constexpr (kGradCoeffs) {
        for (int64_t i = 0; i < K * stride; ++i) scratch[i] = T(0);
      }
      const int64_t row_begin = piece * pr.piece_length;
      const int64_t row_end =
          pr.outer - row_begin < pr.piece_length ? pr.outer : row_begin + pr.piece_length;
      // A block of whole rows reads memory in order, which the hardware prefetcher follows;
      // a part of each row is a run in a page of its own (at 1024 float channels), which it
      // would pick up only after a few misses per row: the same block of the next row is
      // asked for one row's work ahead.
      const bool ask_ahead = c_end - c_begin < C;
      for (int64_t row = row_begin; row < row_end; ++row) {
        for (int64_t c0 = c_begin; c0 < c_end; c0 += V) {
          const int64_t at = row * C + c0;
          const int n = int(c_end - c0 < V ? c_end - c0 : V);
          if (ask_ahead && row + 1 < row_end) {
            prefetch<false>(x + at + C, n);
            prefetch<false>(grad + at + C, n);
            if constexpr (kGradX) prefetch<true>(grad_x + at + C, n);
          }
          backward_lanes<S, true, kOdd, kClamp, kGradX, kGradCoeffs>(
              grad + at, x + at, kGradX ? grad_x + at : nullptr, n, table + c0, columns,
              scratch + (c0 - c_begin), stride, K, d);
        }
      }
      if constexpr (kGradCoeffs) {
        for (int64_t j = 0; j < K; ++j) {
          for (int64_t c = c_begin; c < c_end; ++c) {
            partials[(piece * K + j) * C + c] = scratch[j * stride + c - c_begin];
          }
        }
      }
    }
    return;
  }
  // Task = (channel, piece): lane accumulators in `scratch` (K x V), summed across lanes in a
  // fixed order into the piece's partial sums at the end.
  for (int64_t task = begin; task < end; ++task) {
    const int64_t channel = task / pr.num_pieces;
    const int64_t piece = task % pr.num_pieces;
    if constexpr (kGradCoeffs) {
      for (int64_t i = 0; i < K * V; ++i) scratch[i] = T(0);
    }
    const T* slopes = table + channel * K;
    for_each_block_of_piece<V>(pr, channel, piece, [&](int64_t at, int n) {
      backward_lanes<S, false, kOdd, kClamp, kGradX, kGradCoeffs>(grad + at, x + at,
                                                    kGradX ? grad_x + at : nullptr, n, slopes, 1,
                                                    scratch, V, K, d);
    });
    if constexpr (kGradCoeffs) {
      for (int64_t j = 0; j < K; ++j) {
        T sum = T(0);
        for (int l = 0; l < V; ++l) sum += scratch[j * V + l];
        partials[(piece * K + j) * pr.channels + channel] = sum;
      }
    }
  }
}

// Calls fn(odd, clamp) with both as std::bool_constant.
template <typename Fn>
FASTACT_HOST_DEVICE void with_basis(bool odd, bool clamp, Fn fn) {
  using Yes = std::true_type;
  using No = std::false_type;
  if (odd) {
    clamp ? fn(Yes{}, Yes{}) : fn(Yes{}, No{});
  } else {
    clamp ? fn(No{}, Yes{}) : fn(No{}, No{});
  }
}

}  // namespace dct

void dct_forward_tasks(c10::ScalarType dtype, const DctProblem& problem, const void* table,
                       const void* x, void* y, int64_t begin, int64_t end) {
  dispatch_storage(dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = typename Storage<S>::acc_t;
    dct::with_basis(problem.odd, problem.clamp, [&](auto odd, auto clamp) {
      dct::forward_tasks<S, decltype(odd)::value, decltype(clamp)::value>(
          problem, static_cast<const T*>(table), static_cast<const S*>(x), static_cast<S*>(y),
          begin, end);
    });
  });
}

void dct_backward_tasks(c10::ScalarType dtype, const DctProblem& problem, const void* table,
                        const void* grad, const void* x, void* grad_x, void* partials,
                        void* scratch, int64_t begin, int64_t end) {
  dispatch_storage(dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = typename Storage<S>::acc_t;
    dct::with_basis(problem.odd, problem.clamp, [&](auto odd, auto clamp) {
      auto run = [&](auto with_grad_x, auto with_grad_coeffs) {
        dct::backward_tasks<S, decltype(odd)::value, decltype(clamp)::value,
                            decltype(with_grad_x)::value, decltype(with_grad_coeffs)::value>(
            problem, static_cast<const T*>(table), static_cast<const S*>(grad),
            static_cast<const S*>(x), static_cast<S*>(grad_x), static_cast<T*>(partials),
            static_cast<T*>(scratch), begin, end);
      };
      using Yes = std::true_type;
      using No = std::false_type;
      if (grad_x != nullptr && partials != nullptr) {
        run(Yes{}, Yes{});
      } else if (grad_x != nullptr) {
        run(Yes{}, No{});
      } else if (partials != nullptr) {
        run(No{}, Yes{});
      }
    });
  });
}

}  // namespace fastact::cpu::FASTACT_ISA

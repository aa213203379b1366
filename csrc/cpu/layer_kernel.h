// The GmP layer's CPU kernels (its epilogues); compiled once per instruction set by
// csrc/cpu/isa_*.cpp. They compute in Storage<S>::acc_t.
#include <cstdint>

#include "cpu/isa.h"
#include "cpu/layer_args.h"
#include "cpu/storage.h"
#include "fastact/layer.h"

namespace fastact::cpu::FASTACT_ISA {
namespace {

template <typename S>
FASTACT_HOST_DEVICE typename Storage<S>::acc_t dot_in_fixed_order(const S* a, const S* b,
                                                                  int64_t n) {
  using T = Storage<S>;
  using A = typename T::acc_t;
  // Eight partial sums in a fixed order: vectorises, and the result depends only on n.
  A partial[8] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; ++l) partial[l] += T::load(a[k + l]) * T::load(b[k + l]);
  }
  A tail = A(0);
  for (; k < n; ++k) tail += T::load(a[k]) * T::load(b[k]);
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7])) + tail;
}

}  // namespace

// z = radius * relu(z + bias) in place over the task's rows and mask words, and the mask.
void geometric_relu_epilogue(const EpilogueForward& args) {
  const OutputBlock& block = args.block;
  dispatch_storage(block.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    const A* radius = static_cast<const A*>(args.radius);
    const A* bias = static_cast<const A*>(args.bias);
    // One mask word: `count` (<= 32) columns from `first`.
    const auto word = [&](S* z, int64_t first, int64_t count) {
      uint32_t bits = 0;
      for (int64_t j = 0; j < count; ++j) {
        const int64_t m = first + j;
        const A pre = T::load(z[m]) + bias[m];
        z[m] = T::store(geometric_relu_output(radius[m], pre));
        bits |= uint32_t(geometric_relu_active(pre)) << j;
      }
      return bits;
    };
    for (int64_t row = block.row_begin; row < block.row_end; ++row) {
      S* z = static_cast<S*>(args.z) + row * block.cols;
      int32_t* mask = args.mask + row * block.words_per_row;
      for (int64_t w = block.word_begin; w < block.word_end; ++w) {
        const int64_t first = w * 32;
        const int64_t count = block.cols - first < 32 ? block.cols - first : 32;
        mask[w] = int32_t(count == 32 ? word(z, first, 32) : word(z, first, count));
      }
    }
  });
}

// grad_masked = mask ? grad : 0 over the task's rows and words; their column sums into `sums`.
void geometric_relu_epilogue_backward(const EpilogueBackward& args) {
  const OutputBlock& block = args.block;
  dispatch_storage(block.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    A* sums = static_cast<A*>(args.sums);
    const int64_t first_column = block.word_begin * 32;
    const int64_t end_column = block.word_end * 32 < block.cols ? block.word_end * 32 : block.cols;
    for (int64_t m = first_column; m < end_column; ++m) sums[m] = A(0);
    const auto word = [&](const S* grad, S* out, uint32_t bits, int64_t first, int64_t count) {
      for (int64_t j = 0; j < count; ++j) {
        const int64_t m = first + j;
        const A g = geometric_relu_masked_grad(T::load(grad[m]), ((bits >> j) & 1u) != 0);
        out[m] = T::store(g);
        sums[m] += g;
      }
    };
    for (int64_t row = block.row_begin; row < block.row_end; ++row) {
      const S* grad = static_cast<const S*>(args.grad) + row * block.cols;
      S* out = static_cast<S*>(args.grad_masked) + row * block.cols;
      const int32_t* mask = args.mask + row * block.words_per_row;
      for (int64_t w = block.word_begin; w < block.word_end; ++w) {
        const int64_t first = w * 32;
        const int64_t count = block.cols - first < 32 ? block.cols - first : 32;
        const uint32_t bits = uint32_t(mask[w]);
        if (count == 32) {
          word(grad, out, bits, first, 32);
        } else {
          word(grad, out, bits, first, count);
        }
      }
    }
  });
}

// The per-channel step of the backward (fastact/layer.h; layer_args.h: RadialBackward).
void geometric_relu_radial_backward(const RadialBackward& args) {
  dispatch_storage(args.dtype, [&](auto storage) {
    using S = decltype(storage);
    using T = Storage<S>;
    using A = typename T::acc_t;
    const A* partial = static_cast<const A*>(args.partial);
    const S* bias = static_cast<const S*>(args.bias);
    S* grad_bias = static_cast<S*>(args.grad_bias);
    for (int64_t c = args.channel_begin; c < args.channel_end; ++c) {
      S* grad_u = static_cast<S*>(args.grad_u) + c * args.fan_in;
      const S* u = static_cast<const S*>(args.u) + c * args.fan_in;
      const A radius = T::load(static_cast<const S*>(args.radius)[c]);
      A bias_term = A(0);
      A sum_all = A(0);
      for (int64_t p = 0; p < args.positions; ++p) {
        const A s = layer_column_sum(partial + c * args.sum_stride_c + p * args.sum_stride_p,
                                     args.blocks, args.cols);
        sum_all += s;
        if (bias != nullptr) {
          bias_term += T::load(bias[c * args.bias_stride_c + p * args.bias_stride_p]) * s;
        }
        if (args.bias_per_position) grad_bias[c * args.positions + p] = T::store(radius * s);
      }
      if (!args.bias_per_position) grad_bias[c] = T::store(radius * sum_all);
      const A dot = dot_in_fixed_order(grad_u, u, args.fan_in);
      static_cast<S*>(args.grad_radius)[c] = T::store(dot + bias_term);
      for (int64_t k = 0; k < args.fan_in; ++k) grad_u[k] = T::store(radius * T::load(grad_u[k]));
      if (args.weight != nullptr) {
        S* weight = static_cast<S*>(args.weight) + c * args.fan_in;
        for (int64_t k = 0; k < args.fan_in; ++k) weight[k] = T::store(radius * T::load(u[k]));
      }
    }
  });
}

}  // namespace fastact::cpu::FASTACT_ISA

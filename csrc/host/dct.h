// DCT-basis activation: what the CPU and CUDA glue share on the host side. The argument
// checks, the channel view of a dense tensor, the coefficient tables, and the two ops composed
// once for every device from a device's `Kernels` (csrc/cpu/dct.cpp, csrc/cuda/dct.cu), which
// provides
//
//   using DeviceGuard = ...;   // set for x's device around the whole op
//   static void forward(const DctCall& call, const at::Tensor& y)
//       y = f(call.x), call.table holding F_j
//   static at::Tensor backward(const DctCall& call, const at::Tensor& grad_x, bool grad_coeffs)
//       grad_x (when defined), and with grad_coeffs the coefficient gradient [channels, K] in
//       the compute dtype (else undefined), call.table holding G_j (dct_slope_table)
//
// Both are called only with x non-empty, and the backward with something to compute.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "host/common.h"

namespace fastact {

inline void check_dct_arguments(const char* op, const at::Tensor& x, const at::Tensor& coeffs,
                                int64_t channel_dim, double lo, double hi) {
  check_float_tensor(op, "x", x);
  check_float_tensor(op, "coeffs", coeffs);
  TORCH_CHECK(coeffs.device() == x.device(), "fastact.", op, ": coeffs (on ", coeffs.device(),
              ") must be on x's device (", x.device(), ")");
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(1) >= 1, "fastact.", op,
              ": coeffs must have shape [channels, num_coeffs] with num_coeffs >= 1, got ",
              coeffs.sizes());
  TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi && std::isfinite(hi - lo) &&
                  std::isfinite(1.0 / (hi - lo)),
              "fastact.", op, ": the domain (lo, hi) must be finite with lo < hi, got (", lo, ", ",
              hi, ")");
  // t = x * scale + offset in the compute type (float for 16/32-bit x): a scale 1 / (hi - lo)
  // beyond its normal range would overflow (NaN for every x) or lose its precision.
  const bool in_float = x.scalar_type() != at::kDouble;
  const double smallest = in_float ? FLT_MIN : DBL_MIN, largest = in_float ? FLT_MAX : DBL_MAX;
  const double scale = 1.0 / (hi - lo);
  TORCH_CHECK(scale >= smallest && scale <= largest, "fastact.", op, ": the domain (", lo, ", ",
              hi, ") does not fit ", x.scalar_type(), " x, computed in ",
              in_float ? "float32" : "float64", ": hi - lo must be between ", 1.0 / largest,
              " and ", 1.0 / smallest);
  const int64_t dims = std::max<int64_t>(x.dim(), 1);
  TORCH_CHECK(channel_dim >= 0 && channel_dim < dims, "fastact.", op, ": channel_dim ",
              channel_dim, " is out of range for x with ", x.dim(),
              " dimensions (the Python API accepts negative values)");
  if (coeffs.size(0) != 1) {
    TORCH_CHECK(x.dim() > 0 && coeffs.size(0) == x.size(channel_dim), "fastact.", op,
                ": coeffs has ", coeffs.size(0), " rows but x has ",
                x.dim() > 0 ? x.size(channel_dim) : 1, " channels along dimension ", channel_dim,
                " (expected one row per channel, or a single shared row)");
  }
}

// A dense (non-overlapping) tensor's memory viewed as [outer, channels, inner]: the element
// at memory offset m is in channel (m / inner) % channels. Holds for any dense layout
// (contiguous, channels_last, any permutation): inner is the stride of the channel
// dimension. Shared coefficients make the whole tensor one channel.
struct DctChannelView {
  int64_t outer, channels, inner;
};

inline DctChannelView dct_channel_view(const at::Tensor& dense, int64_t channel_dim,
                                       int64_t coeff_rows) {
  const int64_t numel = dense.numel();
  if (coeff_rows == 1) return {1, 1, numel};
  const int64_t inner = dense.stride(channel_dim);
  return {numel / (coeff_rows * inner), coeff_rows, inner};
}

// `t` laid out as the dense tensor `like` (a copy only when the strides differ).
inline at::Tensor dct_in_layout(const at::Tensor& t, const at::Tensor& like) {
  return t.strides() == like.strides() ? t : at::empty_like(like).copy_(t);
}

// The dense layout the kernels work in: x's own when x is dense, else the layout
// at::empty_like(x) gives the outputs.
inline at::Tensor dct_dense(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous(x.suggest_memory_format());
}

// t = x * scale + offset maps the domain [lo, hi] onto [0, 1].
inline double dct_scale(double lo, double hi) { return 1.0 / (hi - lo); }
inline double dct_offset(double lo, double hi) { return -lo / (hi - lo); }

// The forward table: coeffs in the compute type, [channels, K].
inline at::Tensor dct_value_table(const at::Tensor& coeffs, c10::ScalarType compute) {
  return coeffs.to(compute).contiguous();
}

// The backward table: dy/dx = sum_j G_j sin(pi k_j t) with G_j = -pi k_j F_j * scale,
// computed in double and rounded once to the compute type. On the CPU a loop: the ATen ops
// cost ~10 us a call, more than the whole op on a small tensor.
inline at::Tensor dct_slope_table(const at::Tensor& coeffs, c10::ScalarType compute, bool odd,
                                  double scale) {
  const int64_t K = coeffs.size(1);
  at::Tensor factors = at::empty({K}, at::kDouble);  // -pi k_j scale
  double* factor = factors.mutable_data_ptr<double>();
  for (int64_t j = 0; j < K; ++j) factor[j] = (odd ? 2 * j + 1 : j) * (-M_PI * scale);
  const at::Tensor F = coeffs.to(at::kDouble).contiguous();
  if (!F.is_cpu()) {
    return (F * factors.to(F.device(), /*non_blocking=*/true)).to(compute).contiguous();
  }
  at::Tensor G = at::empty_like(F);
  const double* f = F.const_data_ptr<double>();
  double* g = G.mutable_data_ptr<double>();
  for (int64_t c = 0; c < F.size(0); ++c) {
    for (int64_t j = 0; j < K; ++j) g[c * K + j] = f[c * K + j] * factor[j];
  }
  return G.to(compute);
}

// What a device's kernels get: x (and grad, the backward's grad_out) laid out alike in dense
// memory viewed as `view`, the [channels, K] table in the compute dtype, and the basis.
struct DctCall {
  const at::Tensor& x;
  const at::Tensor& grad;  // undefined in the forward
  DctChannelView view;
  const at::Tensor& table;
  c10::ScalarType compute;
  double scale, offset;  // t = x * scale + offset
  bool odd, clamp;
};

template <typename Kernels>
at::Tensor dct_activation(const at::Tensor& x, const at::Tensor& coeffs, int64_t channel_dim,
                          double lo, double hi, bool odd, bool clamp) {
  check_dct_arguments("dct_activation", x, coeffs, channel_dim, lo, hi);
  const typename Kernels::DeviceGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (y.numel() == 0) return y;
  const at::Tensor xd = dct_in_layout(x, y);
  const c10::ScalarType compute = compute_dtype(x.scalar_type());
  const at::Tensor table = dct_value_table(coeffs, compute);
  Kernels::forward(DctCall{xd, at::Tensor(), dct_channel_view(y, channel_dim, coeffs.size(0)),
                           table, compute, dct_scale(lo, hi), dct_offset(lo, hi), odd, clamp},
                   y);
  return y;
}

// output_mask says which of (grad_x, grad_coeffs) to compute; the others come back empty.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> dct_activation_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& coeffs, int64_t channel_dim,
    double lo, double hi, bool odd, bool clamp, std::array<bool, 2> output_mask) {
  const char* op = "dct_activation_backward";
  check_dct_arguments(op, x, coeffs, channel_dim, lo, hi);
  check_matches(op, "grad_out", grad_out, "x", x);
  const typename Kernels::DeviceGuard guard(x.device());
  const bool need_grad_x = output_mask[0], need_grad_coeffs = output_mask[1];
  at::Tensor grad_x = need_grad_x ? at::empty_like(x) : at::empty({0}, x.options());
  if (x.numel() == 0 || !(need_grad_x || need_grad_coeffs)) {
    return {grad_x, need_grad_coeffs ? at::zeros(coeffs.sizes(), coeffs.options())
                                     : at::empty({0}, coeffs.options())};
  }
  const at::Tensor layout = need_grad_x ? grad_x : dct_dense(x);
  const at::Tensor xd = dct_in_layout(x, layout);
  const at::Tensor gd = dct_in_layout(grad_out, layout);
  const c10::ScalarType compute = compute_dtype(x.scalar_type());
  const double scale = dct_scale(lo, hi);
  const at::Tensor table = dct_slope_table(coeffs, compute, odd, scale);
  const at::Tensor grad_coeffs = Kernels::backward(
      DctCall{xd, gd, dct_channel_view(layout, channel_dim, coeffs.size(0)), table, compute,
              scale, dct_offset(lo, hi), odd, clamp},
      need_grad_x ? grad_x : at::Tensor(), need_grad_coeffs);
  return {grad_x, need_grad_coeffs ? grad_coeffs.to(coeffs.scalar_type())
                                   : at::empty({0}, coeffs.options())};
}

template <typename Kernels>
void register_dct_kernels(torch::Library& m) {
  m.impl("dct_activation", &dct_activation<Kernels>);
  m.impl("dct_activation_backward", &dct_activation_backward<Kernels>);
}

}  // namespace fastact

// DCT-basis activation: what the CPU and CUDA glue share on the host side. Argument checks
// (the Python API checks first, with friendlier messages; these guard direct calls of
// torch.ops.fastact.*), the channel view of a dense tensor, and the coefficient tables.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "checks.h"

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

// The compute type of x's dtype: double for double, float otherwise.
inline c10::ScalarType dct_compute_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// t = x * scale + offset maps the domain [lo, hi] onto [0, 1].
inline double dct_scale(double lo, double hi) { return 1.0 / (hi - lo); }
inline double dct_offset(double lo, double hi) { return -lo / (hi - lo); }

// The forward table: coeffs in the compute type, [channels, K].
inline at::Tensor dct_value_table(const at::Tensor& coeffs, c10::ScalarType compute) {
  return coeffs.to(compute).contiguous();
}

// The backward table: dy/dx = sum_j G_j sin(pi k_j t) with G_j = -pi k_j F_j * scale,
// computed in double and rounded once to the compute type.
inline at::Tensor dct_slope_table(const at::Tensor& coeffs, c10::ScalarType compute, bool odd,
                                  double scale) {
  const int64_t K = coeffs.size(1);
  at::Tensor k = at::arange(K, coeffs.options().dtype(at::kDouble));
  if (odd) k = 2 * k + 1;
  return (coeffs.to(at::kDouble) * (k * (-M_PI * scale))).to(compute).contiguous();
}

}  // namespace fastact

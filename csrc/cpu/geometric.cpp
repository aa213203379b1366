// GmP on CPU: ATen glue around the per-instruction-set kernels of geometric_kernel.h. Work is
// split with at::parallel_for; the reductions behind parameter gradients use blocks fixed by
// the shapes alone, summed in a fixed order, so they do not depend on the thread count.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "checks.h"
#include "cpu/geometric_args.h"
#include "cpu/isa.h"
#include "geometric_layer.h"

FASTACT_DECLARE_CPU_KERNEL(SphericalToCartesianKernel, spherical_to_cartesian_rows)
FASTACT_DECLARE_CPU_KERNEL(SphericalToCartesianBackwardKernel, spherical_to_cartesian_backward_rows)
FASTACT_DECLARE_CPU_KERNEL(CartesianToSphericalKernel, cartesian_to_spherical_rows)
FASTACT_DECLARE_CPU_KERNEL(CartesianToSphericalBackwardKernel, cartesian_to_spherical_backward_rows)
FASTACT_DECLARE_CPU_KERNEL(EpilogueForwardKernel, geometric_relu_epilogue)
FASTACT_DECLARE_CPU_KERNEL(EpilogueBackwardKernel, geometric_relu_epilogue_backward)
FASTACT_DECLARE_CPU_KERNEL(RadialBackwardKernel, geometric_relu_radial_backward)

namespace fastact::cpu {
namespace {

// Elements per parallel task: enough to amortise a task, small enough to balance.
constexpr int64_t kTaskElements = 32768;
// Output columns per task, in whole mask words.
constexpr int64_t kTaskWords = 128;

int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, elements_per_item));
}

// Runs fn(SphericalRows) over the rows of a map with n coordinates per row, in parallel, in
// grains of whole groups of kSphericalRowGroup rows (the kernels scan those side by side), each
// task with its own scratch when `scratch` (the backward kernels').
template <typename Fn>
void for_spherical_rows(c10::ScalarType dtype, int64_t rows, int64_t n, bool scratch, Fn fn) {
  const int64_t groups = (rows + kSphericalRowGroup - 1) / kSphericalRowGroup;
  at::parallel_for(0, groups, grain_for(8 * n * kSphericalRowGroup),
                   [&](int64_t begin, int64_t end) {
                     // Aligned to a cache line: the kernels store whole vectors of 8 doubles
                     // into it, and a store that straddles two lines costs twice.
                     std::vector<double> work(scratch ? kSphericalScratch * n + 1 + 8 : 0);
                     const auto misalignment = reinterpret_cast<uintptr_t>(work.data()) % 64;
                     double* aligned = work.data() + (64 - misalignment) % 64 / sizeof(double);
                     fn(SphericalRows{dtype, n, begin * kSphericalRowGroup,
                                      std::min(rows, end * kSphericalRowGroup), aligned});
                   });
}

at::Tensor spherical_to_cartesian_cpu(const at::Tensor& theta) {
  check_float_tensor("spherical_to_cartesian", "theta", theta);
  TORCH_CHECK(theta.dim() >= 1,
              "fastact.spherical_to_cartesian: theta must have at least one "
              "dimension (the angles), got a 0-d tensor");
  std::vector<int64_t> shape = theta.sizes().vec();
  const int64_t n = ++shape.back();
  at::Tensor u = at::empty(shape, theta.options());
  const at::Tensor angles = theta.contiguous();
  const auto kernel = spherical_to_cartesian_rows_for_this_cpu();
  for_spherical_rows(theta.scalar_type(), u.numel() / n, n, false, [&](const SphericalRows& rows) {
    kernel(rows, angles.const_data_ptr(), u.mutable_data_ptr());
  });
  return u;
}

at::Tensor spherical_to_cartesian_backward_cpu(const at::Tensor& grad_u, const at::Tensor& theta) {
  const char* op = "spherical_to_cartesian_backward";
  check_float_tensor(op, "theta", theta);
  TORCH_CHECK(theta.dim() >= 1, "fastact.", op, ": theta must have at least one dimension");
  std::vector<int64_t> shape = theta.sizes().vec();
  const int64_t n = ++shape.back();
  TORCH_CHECK(grad_u.scalar_type() == theta.scalar_type() && grad_u.device() == theta.device() &&
                  grad_u.sizes() == at::IntArrayRef(shape),
              "fastact.", op, ": grad_u must be a ", theta.scalar_type(), " tensor of shape ",
              at::IntArrayRef(shape), ", got ", grad_u.scalar_type(), " ", grad_u.sizes());
  at::Tensor grad_theta = at::empty(theta.sizes(), theta.options());
  const at::Tensor grad = grad_u.contiguous();
  const at::Tensor angles = theta.contiguous();
  const auto kernel = spherical_to_cartesian_backward_rows_for_this_cpu();
  for_spherical_rows(
      theta.scalar_type(), grad_u.numel() / n, n, true, [&](const SphericalRows& rows) {
        kernel(rows, grad.const_data_ptr(), angles.const_data_ptr(), grad_theta.mutable_data_ptr());
      });
  return grad_theta;
}

void check_cartesian(const char* op, const at::Tensor& w) {
  check_float_tensor(op, "w", w);
  TORCH_CHECK(w.dim() >= 1 && w.size(-1) >= 2, "fastact.", op,
              ": w must have at least 2 coordinates in its last dimension, got shape ", w.sizes());
}

std::tuple<at::Tensor, at::Tensor> cartesian_to_spherical_cpu(const at::Tensor& w) {
  check_cartesian("cartesian_to_spherical", w);
  const int64_t n = w.size(-1);
  at::Tensor radius = at::empty(w.sizes().slice(0, w.dim() - 1), w.options());
  std::vector<int64_t> shape = w.sizes().vec();
  shape.back() = n - 1;
  at::Tensor theta = at::empty(shape, w.options());
  const at::Tensor coordinates = w.contiguous();
  const auto kernel = cartesian_to_spherical_rows_for_this_cpu();
  for_spherical_rows(w.scalar_type(), radius.numel(), n, false, [&](const SphericalRows& rows) {
    kernel(rows, coordinates.const_data_ptr(), radius.mutable_data_ptr(), theta.mutable_data_ptr());
  });
  return {radius, theta};
}

at::Tensor cartesian_to_spherical_backward_cpu(const std::optional<at::Tensor>& grad_radius,
                                               const std::optional<at::Tensor>& grad_theta,
                                               const at::Tensor& w) {
  const char* op = "cartesian_to_spherical_backward";
  check_cartesian(op, w);
  const int64_t n = w.size(-1);
  const at::IntArrayRef batch = w.sizes().slice(0, w.dim() - 1);
  std::vector<int64_t> theta_shape = w.sizes().vec();
  theta_shape.back() = n - 1;
  const auto checked = [&](const std::optional<at::Tensor>& t, const char* name,
                           at::IntArrayRef shape) -> at::Tensor {
    if (!t.has_value()) return {};
    TORCH_CHECK(
        t->scalar_type() == w.scalar_type() && t->device() == w.device() && t->sizes() == shape,
        "fastact.", op, ": ", name, " must be a ", w.scalar_type(), " tensor of shape ", shape,
        ", got ", t->scalar_type(), " ", t->sizes());
    return t->contiguous();
  };
  const at::Tensor radius_grad = checked(grad_radius, "grad_radius", batch);
  const at::Tensor theta_grad = checked(grad_theta, "grad_theta", theta_shape);
  at::Tensor grad_w = at::empty(w.sizes(), w.options());
  const at::Tensor coordinates = w.contiguous();
  const auto kernel = cartesian_to_spherical_backward_rows_for_this_cpu();
  for_spherical_rows(w.scalar_type(), grad_w.numel() / n, n, true, [&](const SphericalRows& rows) {
    kernel(rows, radius_grad.defined() ? radius_grad.const_data_ptr() : nullptr,
           theta_grad.defined() ? theta_grad.const_data_ptr() : nullptr,
           coordinates.const_data_ptr(), grad_w.mutable_data_ptr());
  });
  return grad_w;
}

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
  static at::Tensor forward(at::Tensor& z, const OutputGeometry& geometry, const at::Tensor& radius,
                            const std::optional<at::Tensor>& bias) {
    const at::Tensor radius_columns = per_column(radius, geometry);
    const at::Tensor bias_columns =
        bias.has_value() ? per_column(*bias, geometry) : at::zeros_like(radius_columns);
    at::Tensor mask =
        at::empty({geometry.rows, geometry.words_per_row()}, z.options().dtype(at::kInt));
    const auto kernel = geometric_relu_epilogue_for_this_cpu();
    for_output_blocks(z.scalar_type(), geometry, 1, [&](int64_t, const OutputBlock& block) {
      kernel(EpilogueForward{block, z.mutable_data_ptr(), radius_columns.const_data_ptr(),
                             bias_columns.const_data_ptr(), mask.mutable_data_ptr<int32_t>()});
    });
    return mask;
  }

  static std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& mask,
                                                     const OutputGeometry& geometry) {
    // Column sums per block of rows (at most 64 per column), finished in order by radial().
    const int64_t rows_per_block = rows_per_sum_block(geometry.rows, 64, 64);
    const int64_t row_blocks = (geometry.rows + rows_per_block - 1) / rows_per_block;
    at::Tensor partial = at::empty({row_blocks, geometry.cols},
                                   grad.options().dtype(compute_dtype(grad.scalar_type())));
    at::Tensor grad_masked = at::empty_like(grad);
    const auto kernel = geometric_relu_epilogue_backward_for_this_cpu();
    for_output_blocks(grad.scalar_type(), geometry, rows_per_block,
                      [&](int64_t row_block, const OutputBlock& block) {
                        kernel(EpilogueBackward{
                            block, grad.const_data_ptr(), mask.const_data_ptr<int32_t>(),
                            grad_masked.mutable_data_ptr(), partial[row_block].mutable_data_ptr()});
                      });
    return {grad_masked, partial};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> radial(
      at::Tensor& grad_u, const at::Tensor& u, const at::Tensor& radius, const at::Tensor& partial,
      const OutputGeometry& geometry, const std::optional<at::Tensor>& bias, bool with_weight) {
    const bool per_position = bias.has_value() && bias->numel() != geometry.channels;
    const at::Tensor bias_values = bias.has_value() ? bias->contiguous() : at::Tensor();
    const at::Tensor radius_values = radius.contiguous();
    at::Tensor grad_radius = at::empty_like(radius_values);
    at::Tensor grad_bias =
        at::empty(per_position ? geometry.cols : geometry.channels, radius.options());
    at::Tensor weight = with_weight ? at::empty_like(u) : at::Tensor();
    const int64_t fan_in = u.size(1);
    const int64_t blocks = partial.size(0);
    const auto kernel = geometric_relu_radial_backward_for_this_cpu();
    at::parallel_for(
        0, geometry.channels, grain_for(fan_in + blocks * geometry.positions),
        [&](int64_t begin, int64_t end) {
          kernel(RadialBackward{u.scalar_type(),
                                fan_in,
                                geometry.positions,
                                begin,
                                end,
                                grad_u.mutable_data_ptr(),
                                u.const_data_ptr(),
                                radius_values.const_data_ptr(),
                                partial.const_data_ptr(),
                                blocks,
                                geometry.cols,
                                geometry.stride_channel(),
                                geometry.stride_position(),
                                bias_values.defined() ? bias_values.const_data_ptr() : nullptr,
                                per_position ? geometry.positions : 1,
                                per_position ? 1 : 0,
                                per_position,
                                grad_radius.mutable_data_ptr(),
                                grad_bias.mutable_data_ptr(),
                                with_weight ? weight.mutable_data_ptr() : nullptr});
        });
    return {grad_radius, grad_bias, weight};
  }
};

std::tuple<at::Tensor, at::Tensor> geometric_relu_linear_cpu(
    const at::Tensor& x, const at::Tensor& u, const at::Tensor& radius,
    const std::optional<at::Tensor>& bias) {
  return linear_forward<CpuEpilogues>(x, u, radius, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> geometric_relu_linear_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& mask, const at::Tensor& x, const at::Tensor& u,
    const at::Tensor& radius, const std::optional<at::Tensor>& bias, bool x_needs_grad) {
  return linear_backward<CpuEpilogues>(grad_z, mask, x, u, radius, bias, x_needs_grad);
}

std::tuple<at::Tensor, at::Tensor> geometric_relu_conv2d_cpu(
    const at::Tensor& x, const at::Tensor& u, const at::Tensor& radius,
    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward<CpuEpilogues>(x, u, radius, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> geometric_relu_conv2d_backward_cpu(
    const at::Tensor& grad_z, const at::Tensor& mask, const at::Tensor& x, const at::Tensor& u,
    const at::Tensor& radius, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool x_needs_grad) {
  return conv2d_backward<CpuEpilogues>(grad_z, mask, x, u, radius, bias, stride, padding, dilation,
                                       groups, x_needs_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CPU, m) {
  m.impl("spherical_to_cartesian", &spherical_to_cartesian_cpu);
  m.impl("spherical_to_cartesian_backward", &spherical_to_cartesian_backward_cpu);
  m.impl("cartesian_to_spherical", &cartesian_to_spherical_cpu);
  m.impl("cartesian_to_spherical_backward", &cartesian_to_spherical_backward_cpu);
  m.impl("geometric_relu_linear", &geometric_relu_linear_cpu);
  m.impl("geometric_relu_linear_backward", &geometric_relu_linear_backward_cpu);
  m.impl("geometric_relu_conv2d", &geometric_relu_conv2d_cpu);
  m.impl("geometric_relu_conv2d_backward", &geometric_relu_conv2d_backward_cpu);
}

}  // namespace fastact::cpu

// The GmP layer ops (fastact/layer.h), z = radius * relu(x . u + bias) with the directions u
// given, composed once for every device: the matmul / convolution on ATen (BLAS, cuBLAS,
// oneDNN, cuDNN), the argument checks, shapes and allocations here, and the elementwise and
// per-channel work in a device's `Epilogues` (csrc/cpu/layer.cpp, csrc/cuda/layer.cu), which
// provides
//
//   using DeviceGuard = ...;   // set for x's device around the whole op
//   static constexpr int64_t kMaxSumBlocks;   // blocks of rows of the backward's column sums
//   static void forward(const at::Tensor& z, const OutputGeometry&,
//                       const at::Tensor& radius_columns, const at::Tensor& bias_columns,
//                       const at::Tensor& mask)
//       z = radius * relu(z + bias) in place, and the activity mask [rows, words] (int32), from
//       radius and bias per output column (per_column)
//   static void backward(const at::Tensor& grad, const at::Tensor& mask, const OutputGeometry&,
//                        int64_t rows_per_block, const at::Tensor& grad_masked,
//                        const at::Tensor& partial)
//       the masked gradient g' (laid out as grad) and its column sums per block of rows
//       ([blocks, cols] in the compute dtype)
//   static void radial(const RadialTensors&, const OutputGeometry&)
//       the per-channel step (fastact/layer.h has the formulas)
//
// each called only with something to compute. Only the mask is saved for the backward: neither
// the output nor the pre-activation.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "host/common.h"

namespace fastact {

// The layer's output as `rows` samples of `cols` dense values: channel c and position p of a
// sample are column c * positions + p (NCHW), or p * channels + c when the channels are the
// fastest dimension (a linear layer, channels_last).
struct OutputGeometry {
  int64_t rows;
  int64_t cols;
  int64_t channels;
  int64_t positions;
  bool channels_fastest;

  int64_t words_per_row() const { return (cols + 31) / 32; }
  // Strides of column (c, p): S_{c,p} = data[c * stride_channel() + p * stride_position()].
  int64_t stride_channel() const { return channels_fastest ? 1 : positions; }
  int64_t stride_position() const { return channels_fastest ? channels : 1; }
};

// The memory format the conv op gives its output (and wants its gradient in). The fake kernel
// in fastact/layer.py states the same rule.
inline at::MemoryFormat conv_output_format(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

// A per-channel tensor ([channels] or [channels, positions]) as one value per output column,
// in the compute dtype: what the epilogue kernels read per column.
inline at::Tensor per_column(const at::Tensor& t, const OutputGeometry& geometry) {
  const c10::ScalarType compute = compute_dtype(t.scalar_type());
  if (geometry.positions == 1 && t.scalar_type() == compute && t.is_contiguous()) {
    return t.view({-1});  // already one value per column (a linear layer): no copy, no ATen ops
  }
  const at::Tensor values = t.to(compute)
                                .reshape({geometry.channels, -1})
                                .expand({geometry.channels, geometry.positions});
  return (geometry.channels_fastest ? values.t() : values).contiguous().view({-1});
}

// Rows per block of the backward's column sums: fixed by the batch size alone (so the sums do
// not depend on the device or thread count), at most `max_blocks` partial sums per column.
inline int64_t rows_per_sum_block(int64_t rows, int64_t minimum, int64_t max_blocks) {
  return std::max<int64_t>(minimum, (rows + max_blocks - 1) / max_blocks);
}

inline void check_layer_parameters(const char* op, const at::Tensor& x, const at::Tensor& u,
                                   const at::Tensor& radius, const std::optional<at::Tensor>& bias,
                                   int64_t out) {
  check_float_tensor(op, "x", x);
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor*>{"u", &u}, {"radius", &radius}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type(), "fastact.", op, ": ", name,
                     " must have x's dtype ", x.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), "fastact.", op, ": ", name, " is on ", t->device(),
                ", x on ", x.device());
  }
  TORCH_CHECK(radius.dim() == 1 && radius.size(0) == out, "fastact.", op,
              ": radius must have shape [", out, "], got ", radius.sizes());
  if (bias.has_value()) {
    TORCH_CHECK_TYPE(bias->scalar_type() == x.scalar_type(), "fastact.", op,
                     ": bias must have x's dtype ", x.scalar_type(), ", got ", bias->scalar_type());
    TORCH_CHECK(bias->device() == x.device(), "fastact.", op, ": bias is on ", bias->device(),
                ", x on ", x.device());
  }
}

inline void check_mask(const char* op, const at::Tensor& mask, const OutputGeometry& geometry) {
  TORCH_CHECK(mask.scalar_type() == at::kInt && mask.dim() == 2 && mask.size(0) == geometry.rows &&
                  mask.size(1) == geometry.words_per_row() && mask.is_contiguous(),
              "fastact.", op, ": mask must be the contiguous int32 [", geometry.rows, ", ",
              geometry.words_per_row(), "] the forward returned, got ", mask.scalar_type(), " ",
              mask.sizes());
}

// The tensors of the per-channel step (fastact/layer.h), for the channels' [channels, fan_in]
// rows of G' and u.
struct RadialTensors {
  const at::Tensor& grad_u;   // G' on entry, dL/du = radius * G' on return
  const at::Tensor& u;        // contiguous
  const at::Tensor& radius;   // contiguous
  const at::Tensor& partial;  // the backward epilogue's [blocks, cols] column sums
  const at::Tensor& bias;     // contiguous, undefined without bias
  int64_t bias_stride_c, bias_stride_p;  // bias_{c,p} = bias[c * stride_c + p * stride_p]
  bool bias_per_position;
  const at::Tensor& grad_radius;
  const at::Tensor& grad_bias;  // [channels] or [channels * positions]
  const at::Tensor& weight;     // radius * u, undefined where not wanted
};

template <typename Epilogues>
at::Tensor epilogue_forward(const at::Tensor& z, const OutputGeometry& geometry,
                            const at::Tensor& radius, const std::optional<at::Tensor>& bias) {
  const at::Tensor radius_columns = per_column(radius, geometry);
  const at::Tensor bias_columns =
      bias.has_value() ? per_column(*bias, geometry) : at::zeros_like(radius_columns);
  at::Tensor mask =
      at::empty({geometry.rows, geometry.words_per_row()}, z.options().dtype(at::kInt));
  if (geometry.rows > 0 && geometry.cols > 0) {
    Epilogues::forward(z, geometry, radius_columns, bias_columns, mask);
  }
  return mask;
}

// (g', its column sums per block of rows): blocks fixed by the batch size alone, at most
// Epilogues::kMaxSumBlocks per column, finished in order by epilogue_radial.
template <typename Epilogues>
std::tuple<at::Tensor, at::Tensor> epilogue_backward(const at::Tensor& grad,
                                                     const at::Tensor& mask,
                                                     const OutputGeometry& geometry) {
  const int64_t rows_per_block = rows_per_sum_block(geometry.rows, 64, Epilogues::kMaxSumBlocks);
  const int64_t blocks = ceil_div(geometry.rows, rows_per_block);
  at::Tensor grad_masked = at::empty_like(grad);
  at::Tensor partial = at::empty({blocks, geometry.cols},
                                 grad.options().dtype(compute_dtype(grad.scalar_type())));
  if (blocks > 0 && geometry.cols > 0) {
    Epilogues::backward(grad, mask, geometry, rows_per_block, grad_masked, partial);
  }
  return {grad_masked, partial};
}

// (grad_radius, grad_bias, radius * u or undefined); grad_u ([channels, fan_in], G' = g'^T x on
// entry) is scaled in place by radius.
template <typename Epilogues>
std::tuple<at::Tensor, at::Tensor, at::Tensor> epilogue_radial(
    const at::Tensor& grad_u, const at::Tensor& u, const at::Tensor& radius,
    const at::Tensor& partial, const OutputGeometry& geometry,
    const std::optional<at::Tensor>& bias, bool with_weight) {
  const bool per_position = bias.has_value() && bias->numel() != geometry.channels;
  const at::Tensor bias_values = bias.has_value() ? bias->contiguous() : at::Tensor();
  const at::Tensor radius_values = radius.contiguous();
  at::Tensor grad_radius = at::empty_like(radius_values);
  at::Tensor grad_bias =
      at::empty(per_position ? geometry.cols : geometry.channels, radius.options());
  at::Tensor weight = with_weight ? at::empty_like(u) : at::Tensor();
  if (geometry.channels > 0) {
    Epilogues::radial(RadialTensors{grad_u, u, radius_values, partial, bias_values,
                                     per_position ? geometry.positions : 1, per_position ? 1 : 0,
                                     per_position, grad_radius, grad_bias, weight},
                      geometry);
  }
  return {grad_radius, grad_bias, weight};
}

// Where output_mask leaves the parameters out (a frozen layer): x's gradient alone,
// dL/dx = (radius g') u = g' (radius u), the product taken on the smaller of g' (scaled along
// its channel_dim) and u (along its rows), then input_gradient(g, weight). The trained layer's
// radial pass gives radius u anyway, but needs G' = g'^T x, the matmul skipped here.
template <typename InputGradient>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> frozen_layer_gradients(
    const at::Tensor& grad_masked, int64_t channel_dim, const at::Tensor& u,
    const at::Tensor& radius, const at::Tensor& x, bool x_needed,
    const InputGradient& input_gradient) {
  const auto none = [&] { return at::empty({0}, radius.options()); };  // outputs never alias
  at::Tensor grad_x = at::empty({0}, x.options());
  if (x_needed) {
    const auto along = [&](const at::Tensor& t, int64_t dim) {
      std::vector<int64_t> shape(t.dim(), 1);
      shape[dim] = radius.numel();
      return radius.view(shape);
    };
    grad_x = grad_masked.numel() <= u.numel()
                 ? input_gradient(grad_masked * along(grad_masked, channel_dim), u)
                 : input_gradient(grad_masked, u * along(u, 0));
  }
  return {grad_x, none(), none(), none()};
}

// ---- linear: x [..., in], u [out, in], radius [out], bias [out] -----------------------------

inline OutputGeometry linear_geometry(const char* op, const at::Tensor& x, const at::Tensor& u,
                                      const at::Tensor& radius,
                                      const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(u.dim() == 2, "fastact.", op, ": u must be 2-D [out, in], got ", u.sizes());
  check_layer_parameters(op, x, u, radius, bias, u.size(0));
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == u.size(1), "fastact.", op, ": x must be [..., ",
              u.size(1), "] for u of shape ", u.sizes(), ", got ", x.sizes());
  TORCH_CHECK(!bias.has_value() || (bias->dim() == 1 && bias->size(0) == u.size(0)), "fastact.", op,
              ": bias must have shape [", u.size(0), "], got ", bias->sizes());
  const int64_t rows = u.size(1) == 0 ? 0 : x.numel() / u.size(1);
  return {rows, u.size(0), u.size(0), 1, true};
}

template <typename Epilogues>
std::tuple<at::Tensor, at::Tensor> linear_forward(const at::Tensor& x, const at::Tensor& u,
                                                  const at::Tensor& radius,
                                                  const std::optional<at::Tensor>& bias) {
  const typename Epilogues::DeviceGuard guard(x.device());
  const OutputGeometry geometry = linear_geometry("geometric_relu_linear", x, u, radius, bias);
  at::Tensor z = at::mm(x.reshape({geometry.rows, u.size(1)}), u.t());
  at::Tensor mask = epilogue_forward<Epilogues>(z, geometry, radius, bias);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = u.size(0);
  return {z.view(shape), mask};
}

// (grad_x, grad_u, grad_radius, grad_bias), each empty unless output_mask asks for it; grad_bias
// is [out] also without bias.
template <typename Epilogues>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_backward(
    const at::Tensor& grad_z, const at::Tensor& mask, const at::Tensor& x, const at::Tensor& u,
    const at::Tensor& radius, const std::optional<at::Tensor>& bias,
    std::array<bool, 2> output_mask) {
  const char* op = "geometric_relu_linear_backward";
  const typename Epilogues::DeviceGuard guard(x.device());
  const OutputGeometry geometry = linear_geometry(op, x, u, radius, bias);
  check_mask(op, mask, geometry);
  TORCH_CHECK(grad_z.scalar_type() == x.scalar_type() && grad_z.device() == x.device() &&
                  grad_z.numel() == geometry.rows * geometry.cols &&
                  grad_z.size(-1) == geometry.cols,
              "fastact.", op, ": grad_z must be a ", x.scalar_type(), " [..., ", geometry.cols,
              "] tensor matching the output, got ", grad_z.scalar_type(), " ", grad_z.sizes());
  const at::Tensor x2 = x.reshape({geometry.rows, u.size(1)});
  const at::Tensor grad = grad_z.reshape({geometry.rows, geometry.cols}).contiguous();
  auto [grad_masked, partial] = epilogue_backward<Epilogues>(grad, mask, geometry);
  const auto input_gradient = [&](const at::Tensor& g, const at::Tensor& weight) {
    return at::mm(g, weight).view(x.sizes());
  };
  if (!output_mask[1]) {
    return frozen_layer_gradients(grad_masked, 1, u, radius, x, output_mask[0], input_gradient);
  }
  at::Tensor grad_u = at::mm(grad_masked.t(), x2);
  // dL/dx = (radius * g') u = g' (radius u): the radial pass scales the small matrix.
  auto [grad_radius, grad_bias, weight] = epilogue_radial<Epilogues>(
      grad_u, u.contiguous(), radius, partial, geometry, bias, output_mask[0]);
  at::Tensor grad_x =
      output_mask[0] ? input_gradient(grad_masked, weight) : at::empty({0}, x.options());
  return {grad_x, grad_u, grad_radius, grad_bias};
}

// ---- conv2d: x [N, C_in, H, W], u [out, C_in / groups, kh, kw], bias [out] or [out, Ho, Wo] --

inline void check_conv_arguments(const char* op, const at::Tensor& x, const at::Tensor& u,
                                 const at::Tensor& radius, const std::optional<at::Tensor>& bias,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(u.dim() == 4, "fastact.", op, ": u must be 4-D [out, in/groups, kh, kw], got ",
              u.sizes());
  check_layer_parameters(op, x, u, radius, bias, u.size(0));
  TORCH_CHECK(x.dim() == 4, "fastact.", op, ": x must be 4-D [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, "fastact.", op,
              ": stride, padding and dilation must have 2 values");
  TORCH_CHECK(groups >= 1 && x.size(1) == u.size(1) * groups && u.size(0) % groups == 0, "fastact.",
              op, ": x has ", x.size(1), " channels; expected u.size(1) * groups = ", u.size(1),
              " * ", groups, " and out channels divisible by groups");
}

inline OutputGeometry conv_geometry(const char* op, const at::Tensor& z,
                                    const std::optional<at::Tensor>& bias) {
  const int64_t channels = z.size(1);
  const int64_t positions = z.size(2) * z.size(3);
  TORCH_CHECK(!bias.has_value() || (bias->dim() == 1 && bias->size(0) == channels) ||
                  (bias->dim() == 3 && bias->size(0) == channels && bias->size(1) == z.size(2) &&
                   bias->size(2) == z.size(3)),
              "fastact.", op, ": bias must have shape [", channels, "] or [", channels, ", ",
              z.size(2), ", ", z.size(3), "], got ", bias->sizes());
  // z is contiguous (NCHW) or channels_last (NHWC in memory); where both hold (one channel or
  // one position) the two column orders coincide.
  return {z.size(0), channels * positions, channels, positions, !z.is_contiguous()};
}

template <typename Epilogues>
std::tuple<at::Tensor, at::Tensor> conv2d_forward(const at::Tensor& x, const at::Tensor& u,
                                                  const at::Tensor& radius,
                                                  const std::optional<at::Tensor>& bias,
                                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                                  at::IntArrayRef dilation, int64_t groups) {
  const char* op = "geometric_relu_conv2d";
  const typename Epilogues::DeviceGuard guard(x.device());
  check_conv_arguments(op, x, u, radius, bias, stride, padding, dilation, groups);
  at::Tensor z =
      at::conv2d(x, u, {}, stride, padding, dilation, groups).contiguous(conv_output_format(x));
  const OutputGeometry geometry = conv_geometry(op, z, bias);
  at::Tensor mask = epilogue_forward<Epilogues>(z, geometry, radius, bias);
  return {z, mask};
}

template <typename Epilogues>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_z, const at::Tensor& mask, const at::Tensor& x, const at::Tensor& u,
    const at::Tensor& radius, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 2> output_mask) {
  const char* op = "geometric_relu_conv2d_backward";
  const typename Epilogues::DeviceGuard guard(x.device());
  check_conv_arguments(op, x, u, radius, bias, stride, padding, dilation, groups);
  TORCH_CHECK(grad_z.scalar_type() == x.scalar_type() && grad_z.device() == x.device() &&
                  grad_z.dim() == 4 && grad_z.size(0) == x.size(0) && grad_z.size(1) == u.size(0),
              "fastact.", op, ": grad_z must be a ", x.scalar_type(), " [", x.size(0), ", ",
              u.size(0), ", Ho, Wo] tensor matching the output, got ", grad_z.scalar_type(), " ",
              grad_z.sizes());
  const at::Tensor grad = grad_z.contiguous(conv_output_format(x));
  const OutputGeometry geometry = conv_geometry(op, grad, bias);
  check_mask(op, mask, geometry);
  auto [grad_masked, partial] = epilogue_backward<Epilogues>(grad, mask, geometry);
  const auto input_gradient = [&](const at::Tensor& g, const at::Tensor& weight) {
    return std::get<0>(at::convolution_backward(g, x, weight, std::nullopt, stride, padding,
                                                dilation, /*transposed=*/false,
                                                /*output_padding=*/{0, 0}, groups,
                                                {true, false, false}))
        .contiguous(conv_output_format(x));
  };
  if (!output_mask[1]) {
    return frozen_layer_gradients(grad_masked, 1, u, radius, x, output_mask[0], input_gradient);
  }
  // The weight gradient first (it does not read the weight); the radial pass then gives
  // radius * u, the weight of the input gradient.
  auto weight_grads = at::convolution_backward(
      grad_masked, x, u, std::nullopt, stride, padding, dilation, /*transposed=*/false,
      /*output_padding=*/{0, 0}, groups, {false, true, false});
  at::Tensor grad_u = std::get<1>(weight_grads).contiguous();
  at::Tensor flat_grad_u = grad_u.view({u.size(0), -1});
  auto [grad_radius, grad_bias, flat_weight] =
      epilogue_radial<Epilogues>(flat_grad_u, u.contiguous().view({u.size(0), -1}), radius,
                                 partial, geometry, bias, output_mask[0]);
  at::Tensor grad_x = output_mask[0] ? input_gradient(grad_masked, flat_weight.view(u.sizes()))
                                     : at::empty({0}, x.options());
  if (bias.has_value()) grad_bias = grad_bias.view(bias->sizes());
  return {grad_x, grad_u, grad_radius, grad_bias};
}

template <typename Epilogues>
void register_layer_kernels(torch::Library& m) {
  m.impl("geometric_relu_linear", &linear_forward<Epilogues>);
  m.impl("geometric_relu_linear_backward", &linear_backward<Epilogues>);
  m.impl("geometric_relu_conv2d", &conv2d_forward<Epilogues>);
  m.impl("geometric_relu_conv2d_backward", &conv2d_backward<Epilogues>);
}

}  // namespace fastact

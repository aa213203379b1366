// Autograd of the forward ops, in C++: a kernel for the Autograd dispatch key per op, each a
// torch::autograd::Function whose backward calls the op's registered backward op through the
// dispatcher, so torch.compile, torch.export and opcheck see the same ops as with a Python
// formula. Why C++: a Python autograd kernel (torch.library.register_autograd) costs ~5 us on
// every call, also when nothing needs a gradient; this costs ~0.1 us then and ~1 us when it
// records a node. The backward ops keep their Python autograd (fastact/*.py: double backward of
// hat and dct_activation, a clear error for the others): rare, and it needs the reference.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

namespace fastact::autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The op `name` of the library Namespace::name ("fastact"), looked up once per op.
template <typename Namespace, typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string(Namespace::name) + "::" + name).c_str(), "")
      .template typed<Signature>();
}

// Calls `op` below the Autograd key (the device kernel, or the fake one while tracing).
template <typename Signature, typename... Args>
decltype(auto) call_below_autograd(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  const at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

// Calls a backward op from a Function's backward: through its autograd (Python, for double
// backward) only when the engine records a graph of the backward (create_graph=True).
template <typename Signature, typename... Args>
decltype(auto) call_backward(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  if (at::GradMode::is_enabled()) return op.call(std::forward<Args>(args)...);
  return call_below_autograd(op, std::forward<Args>(args)...);
}

inline bool records_graph(std::initializer_list<const at::Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

inline at::Tensor or_undefined(bool needed, const at::Tensor& grad) {
  return needed ? grad : at::Tensor();
}

template <typename Namespace>
struct Ops {
  using Unary = at::Tensor(const at::Tensor&);
  using Binary = at::Tensor(const at::Tensor&, const at::Tensor&);
  using Dct = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double, double, bool,
                         bool);
  using DctBackward = std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double, double, bool,
      bool, std::array<bool, 2>);
  using Pair = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&);
  using InverseBackward = at::Tensor(const std::optional<at::Tensor>&,
                                     const std::optional<at::Tensor>&, const at::Tensor&);
  using Linear = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&,
                                                     const std::optional<at::Tensor>&);
  using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
  using LinearBackward = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&,
                               const std::optional<at::Tensor>&, std::array<bool, 2>);
  using Conv = std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
      at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t);
  using ConvBackward = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const at::Tensor&,
                             const std::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef, int64_t, std::array<bool, 2>);

  static const auto& hat() {
    static const auto op = find_op<Namespace, Unary>("hat");
    return op;
  }
  static const auto& hat_backward() {
    static const auto op = find_op<Namespace, Binary>("hat_backward");
    return op;
  }
  static const auto& dct() {
    static const auto op = find_op<Namespace, Dct>("dct_activation");
    return op;
  }
  static const auto& dct_backward() {
    static const auto op = find_op<Namespace, DctBackward>("dct_activation_backward");
    return op;
  }
  static const auto& to_cartesian() {
    static const auto op = find_op<Namespace, Unary>("spherical_to_cartesian");
    return op;
  }
  static const auto& to_cartesian_backward() {
    static const auto op = find_op<Namespace, Binary>("spherical_to_cartesian_backward");
    return op;
  }
  static const auto& to_spherical() {
    static const auto op = find_op<Namespace, Pair>("cartesian_to_spherical");
    return op;
  }
  static const auto& to_spherical_backward() {
    static const auto op = find_op<Namespace, InverseBackward>("cartesian_to_spherical_backward");
    return op;
  }
  static const auto& linear() {
    static const auto op = find_op<Namespace, Linear>("geometric_relu_linear");
    return op;
  }
  static const auto& linear_backward() {
    static const auto op = find_op<Namespace, LinearBackward>("geometric_relu_linear_backward");
    return op;
  }
  static const auto& conv() {
    static const auto op = find_op<Namespace, Conv>("geometric_relu_conv2d");
    return op;
  }
  static const auto& conv_backward() {
    static const auto op = find_op<Namespace, ConvBackward>("geometric_relu_conv2d_backward");
    return op;
  }
};

// ---- Hat and the hyperspherical map: one input, saved --------------------------------------

// The Function of a one-input op whose backward is backward_op(grad, input).
template <typename Namespace, bool kToCartesian>
struct UnaryFunction : torch::autograd::Function<UnaryFunction<Namespace, kToCartesian>> {
  using O = Ops<Namespace>;
  static const auto& forward_op() { return kToCartesian ? O::to_cartesian() : O::hat(); }
  static const auto& backward_op() {
    return kToCartesian ? O::to_cartesian_backward() : O::hat_backward();
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input) {
    ctx->save_for_backward({input});
    return call_below_autograd(forward_op(), input);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {call_backward(backward_op(), grads[0], ctx->get_saved_variables()[0])};
  }

  static at::Tensor kernel(const at::Tensor& input) {
    if (!records_graph({&input})) return call_below_autograd(forward_op(), input);
    return UnaryFunction::apply(input);
  }
};

// ---- dct_activation --------------------------------------------------------------------------

template <typename Namespace>
struct DctFunction : torch::autograd::Function<DctFunction<Namespace>> {
  using O = Ops<Namespace>;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& coeffs,
                            int64_t channel_dim, double lo, double hi, bool odd, bool clamp) {
    ctx->save_for_backward({x, coeffs});
    ctx->saved_data["channel_dim"] = channel_dim;
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->saved_data["odd"] = odd;
    ctx->saved_data["clamp"] = clamp;
    return call_below_autograd(O::dct(), x, coeffs, channel_dim, lo, hi, odd, clamp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const auto& data = ctx->saved_data;
    const std::array<bool, 2> needed = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    auto [grad_x, grad_coeffs] = call_backward(
        O::dct_backward(), grads[0], saved[0], saved[1], data.at("channel_dim").toInt(), data.at("lo").toDouble(),
        data.at("hi").toDouble(), data.at("odd").toBool(), data.at("clamp").toBool(), needed);
    return {or_undefined(needed[0], grad_x), or_undefined(needed[1], grad_coeffs), {}, {}, {},
            {}, {}};
  }

  static at::Tensor kernel(const at::Tensor& x, const at::Tensor& coeffs, int64_t channel_dim,
                           double lo, double hi, bool odd, bool clamp) {
    if (!records_graph({&x, &coeffs})) {
      return call_below_autograd(O::dct(), x, coeffs, channel_dim, lo, hi, odd, clamp);
    }
    return DctFunction::apply(x, coeffs, channel_dim, lo, hi, odd, clamp);
  }
};

// ---- cartesian_to_spherical: two outputs, either may get no gradient -----------------------

template <typename Namespace>
struct InverseMapFunction : torch::autograd::Function<InverseMapFunction<Namespace>> {
  using O = Ops<Namespace>;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& w) {
    ctx->save_for_backward({w});
    ctx->set_materialize_grads(false);  // the backward op takes an absent gradient as zero
    auto [radius, theta] = call_below_autograd(O::to_spherical(), w);
    return {radius, theta};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined() && !grads[1].defined()) return {at::Tensor()};
    const auto present = [](const at::Tensor& g) {
      return g.defined() ? std::optional<at::Tensor>(g) : std::nullopt;
    };
    return {call_backward(O::to_spherical_backward(), present(grads[0]), present(grads[1]),
                          ctx->get_saved_variables()[0])};
  }

  static std::tuple<at::Tensor, at::Tensor> kernel(const at::Tensor& w) {
    if (!records_graph({&w})) return call_below_autograd(O::to_spherical(), w);
    const variable_list outputs = InverseMapFunction::apply(w);
    return {outputs[0], outputs[1]};
  }
};

// ---- the GmP layers: (z, mask), the mask not differentiable ---------------------------------

inline std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// The backward op's output_mask: grad_x, and the parameters' gradients (all three, as any of
// them needs the pass that gives the others).
inline std::array<bool, 2> layer_output_mask(AutogradContext* ctx) {
  return {ctx->needs_input_grad(0),
          ctx->needs_input_grad(1) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3)};
}

// The gradients of (x, u, radius, bias) from the backward op's four outputs.
inline variable_list layer_grads(AutogradContext* ctx, std::tuple<at::Tensor, at::Tensor,
                                                                  at::Tensor, at::Tensor> grads,
                                 bool has_bias) {
  auto [grad_x, grad_u, grad_radius, grad_bias] = std::move(grads);
  const auto [x_needed, parameters_needed] = layer_output_mask(ctx);
  return {or_undefined(x_needed, grad_x), or_undefined(parameters_needed, grad_u),
          or_undefined(parameters_needed, grad_radius),
          or_undefined(parameters_needed && has_bias, grad_bias)};
}

template <typename Namespace>
struct LinearFunction : torch::autograd::Function<LinearFunction<Namespace>> {
  using O = Ops<Namespace>;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& u,
                               const at::Tensor& radius, const std::optional<at::Tensor>& bias) {
    auto [z, mask] = call_below_autograd(O::linear(), x, u, radius, bias);
    ctx->save_for_backward({x, u, radius, bias.value_or(at::Tensor()), mask});
    ctx->mark_non_differentiable({mask});
    return {z, mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    return layer_grads(ctx,
                       call_backward(O::linear_backward(), grads[0], s[4], s[0], s[1], s[2],
                                     optional_of(s[3]), layer_output_mask(ctx)),
                       s[3].defined());
  }

  static std::tuple<at::Tensor, at::Tensor> kernel(const at::Tensor& x, const at::Tensor& u,
                                                   const at::Tensor& radius,
                                                   const std::optional<at::Tensor>& bias) {
    const at::Tensor b = bias.value_or(at::Tensor());
    if (!records_graph({&x, &u, &radius, &b})) {
      return call_below_autograd(O::linear(), x, u, radius, bias);
    }
    const variable_list outputs = LinearFunction::apply(x, u, radius, bias);
    return {outputs[0], outputs[1]};
  }
};

template <typename Namespace>
struct ConvFunction : torch::autograd::Function<ConvFunction<Namespace>> {
  using O = Ops<Namespace>;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& u,
                               const at::Tensor& radius, const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
    auto [z, mask] = call_below_autograd(O::conv(), x, u, radius, bias, stride, padding,
                                         dilation, groups);
    ctx->save_for_backward({x, u, radius, bias.value_or(at::Tensor()), mask});
    ctx->mark_non_differentiable({mask});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    return {z, mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const auto& data = ctx->saved_data;
    const std::vector<int64_t> stride = data.at("stride").toIntVector();
    const std::vector<int64_t> padding = data.at("padding").toIntVector();
    const std::vector<int64_t> dilation = data.at("dilation").toIntVector();
    variable_list result = layer_grads(
        ctx,
        call_backward(O::conv_backward(), grads[0], s[4], s[0], s[1], s[2], optional_of(s[3]),
                      stride, padding, dilation, data.at("groups").toInt(),
                      layer_output_mask(ctx)),
        s[3].defined());
    result.resize(8);  // no gradient for stride, padding, dilation, groups
    return result;
  }

  static std::tuple<at::Tensor, at::Tensor> kernel(
      const at::Tensor& x, const at::Tensor& u, const at::Tensor& radius,
      const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
      at::IntArrayRef dilation, int64_t groups) {
    const at::Tensor b = bias.value_or(at::Tensor());
    if (!records_graph({&x, &u, &radius, &b})) {
      return call_below_autograd(O::conv(), x, u, radius, bias, stride, padding, dilation,
                                 groups);
    }
    const variable_list outputs =
        ConvFunction::apply(x, u, radius, bias, stride, padding, dilation, groups);
    return {outputs[0], outputs[1]};
  }
};

// Registers the Autograd kernels of Namespace's forward ops (inside
// TORCH_LIBRARY_IMPL(<namespace>, Autograd, m)).
template <typename Namespace>
void register_autograd_kernels(torch::Library& m) {
  m.impl("hat", &UnaryFunction<Namespace, false>::kernel);
  m.impl("spherical_to_cartesian", &UnaryFunction<Namespace, true>::kernel);
  m.impl("dct_activation", &DctFunction<Namespace>::kernel);
  m.impl("cartesian_to_spherical", &InverseMapFunction<Namespace>::kernel);
  m.impl("geometric_relu_linear", &LinearFunction<Namespace>::kernel);
  m.impl("geometric_relu_conv2d", &ConvFunction<Namespace>::kernel);
}

}  // namespace fastact::autograd

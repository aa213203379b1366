// Every op's schema, in one place: torch.ops.fastact (ops.cpp) and the emulated CUDA
// kernels' torch.ops.fastact_emulated (emulator/module.cpp) define the same ops.
#pragma once

#include <torch/library.h>

#include <vector>

namespace fastact {

inline void define_ops(torch::Library& m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};

  // Hat (fastact/hat.py).
  m.def("hat(Tensor x) -> Tensor", tags);
  m.def("hat_backward(Tensor grad_out, Tensor x) -> Tensor", tags);

  // DCT-basis activation (fastact/dct.py): coeffs is [channels, K] (one row: shared),
  // channel_dim is non-negative, t = (x - lo) / (hi - lo); odd: k_j = 2j + 1 (else j);
  // clamp: t clamped to [0, 1] (else the series extends periodically). output_mask says which
  // of (grad_x, grad_coeffs) to compute; the others come back empty ([0]).
  m.def("dct_activation(Tensor x, Tensor coeffs, int channel_dim, float lo, float hi, bool odd, "
        "bool clamp) -> Tensor",
        tags);
  m.def("dct_activation_backward(Tensor grad_out, Tensor x, Tensor coeffs, int channel_dim, "
        "float lo, float hi, bool odd, bool clamp, bool[2] output_mask) -> (Tensor, Tensor)",
        tags);
  // GmP (fastact/sphere.py, fastact/layer.py). The layer ops take the unit directions u; the
  // mask they return is what their backward needs (one bit per output). The layer backward's
  // output_mask says whether to compute grad_x and the parameters' gradients (grad_u,
  // grad_radius, grad_bias, all three or none: a frozen layer's input gradient needs none);
  // the others come back empty ([0]).
  m.def("spherical_to_cartesian(Tensor theta) -> Tensor", tags);
  m.def("spherical_to_cartesian_backward(Tensor grad_u, Tensor theta) -> Tensor", tags);
  m.def("cartesian_to_spherical(Tensor w) -> (Tensor, Tensor)", tags);
  m.def("cartesian_to_spherical_backward(Tensor? grad_radius, Tensor? grad_theta, Tensor w) -> Tensor",
        tags);
  m.def("geometric_relu_linear(Tensor x, Tensor u, Tensor radius, Tensor? bias) -> (Tensor, Tensor)",
        tags);
  m.def("geometric_relu_linear_backward(Tensor grad_z, Tensor mask, Tensor x, Tensor u, "
        "Tensor radius, Tensor? bias, bool[2] output_mask) -> (Tensor, Tensor, Tensor, Tensor)",
        tags);
  m.def("geometric_relu_conv2d(Tensor x, Tensor u, Tensor radius, Tensor? bias, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> (Tensor, Tensor)",
        tags);
  m.def("geometric_relu_conv2d_backward(Tensor grad_z, Tensor mask, Tensor x, Tensor u, "
        "Tensor radius, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
        "int groups, bool[2] output_mask) -> (Tensor, Tensor, Tensor, Tensor)",
        tags);
}

}  // namespace fastact

"""Every fastact op in standard ONNX operators: what the public functions and modules run while
torch.onnx.export traces a model (either exporter), in place of the fused kernels, whose names
(fastact::*) no ONNX runtime knows. _backend.select answers "onnx" then, and these functions
stand in for torch.ops.fastact: same names, arguments and dtypes, plain PyTorch ops that the
exporters translate (Relu, Min, Cos, MatMul, Conv, ...).

They compute what the kernels compute, in the same dtypes; they differ from fastact.reference,
which is written for autograd, where a runtime needs something else:
  hat          relu(min(x, 2 - x)): exact everywhere (2 - x is exact on [1, 2]), NaN
               propagates, 3 operators where the reference's gradient-exact sum takes 9;
  dct          the phase reduced exactly by the period 2 of cos(pi k t) before the Cos, as the
               kernels reduce it, so that inputs far outside the domain keep float accuracy;
  directions   ONNX has no CumProd: the prefix product of sines is a log-depth scan of
               multiplications, in float32 at least (float64 for float64 theta);
  GmP layers   the matmul / convolution in x's dtype, then bias, ReLU and radius in the compute
               dtype (float32 for 16-bit x), as the kernels' fused epilogue. The activity mask
               the kernels return for their backward is None: nothing trains on an ONNX graph.
The directions depend only on theta, so a runtime folds them into constants when it loads the
model (ONNX Runtime does, see tests/test_onnx.py), as it folds the input-mean bias.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

from fastact import reference


def hat(x: Tensor) -> Tensor:
    return torch.relu(torch.minimum(x, 2 - x))


def dct_activation(x: Tensor, coeffs: Tensor, channel_dim: int, lo: float, hi: float, odd: bool,
                   clamp: bool) -> Tensor:
    t = reference.scaled_input(x, (lo, hi), "clamp" if clamp else "periodic")
    if not clamp:
        t = t - 2 * torch.round(t / 2)  # into [-1, 1]; exact, as t and 2 round(t / 2) are close
    return reference.cosine_series(t, coeffs, channel_dim, "odd" if odd else "all").to(x.dtype)


def _prefix_product(factors: Tensor) -> Tensor:
    """cumprod along the last dimension in ceil(log2 n) rounds of multiplications (Hillis and
    Steele's scan): each element is the product of at most log2 n roundings, against n - 1 for
    a running product."""
    size = factors.shape[-1]
    step = 1
    while step < size:
        factors = torch.cat([factors[..., :step], factors[..., step:] * factors[..., :-step]],
                            dim=-1)
        step *= 2
    return factors


def spherical_to_cartesian(theta: Tensor) -> Tensor:
    compute = torch.promote_types(theta.dtype, torch.float32)
    return reference.unit_vectors(theta.to(compute), _prefix_product).to(theta.dtype)


def cartesian_to_spherical(w: Tensor) -> tuple[Tensor, Tensor]:
    return reference.cartesian_to_spherical(w)


def _relu_epilogue(pre: Tensor, radius: Tensor, bias: Tensor | None) -> Tensor:
    """radius * relu(pre + bias) in the compute dtype, returned in pre's dtype."""
    compute = reference.compute_dtype(pre)
    z = pre.to(compute)
    if bias is not None:
        z = z + bias.to(compute)
    return (radius.to(compute) * torch.relu(z)).to(pre.dtype)


def geometric_relu_linear(x: Tensor, u: Tensor, radius: Tensor,
                          bias: Tensor | None) -> tuple[Tensor, None]:
    return _relu_epilogue(functional.linear(x, u), radius, bias), None


def geometric_relu_conv2d(x: Tensor, u: Tensor, radius: Tensor, bias: Tensor | None, stride,
                          padding, dilation, groups: int) -> tuple[Tensor, None]:
    pre = functional.conv2d(x, u, None, stride, padding, dilation, groups)
    if bias is not None and bias.dim() == 1:  # else [out, Ho, Wo]: an input mean folded in
        bias = bias.view(-1, 1, 1)
    return _relu_epilogue(pre, radius.view(-1, 1, 1), bias), None

"""Pure-PyTorch references of every fastact op: the plain statement of each formula and the
ground truth of the tests (run in float64). They compute in the input's dtype and get their
gradients from autograd; they run on any device and are the "reference" backend."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "hat",
    "dct_activation",
    "spherical_to_cartesian",
    "cartesian_to_spherical",
    "geometric_relu",
    "geometric_relu_conv2d",
]


def hat(x: Tensor) -> Tensor:
    """max(0, 1 - |x - 1|), written as relu(x) - 2 relu(x - 1) + relu(x - 2) so that autograd
    gives the stated gradient: +1 on (0, 1], -1 on (1, 2], 0 elsewhere. Clamping to [-1, 3]
    changes no value or gradient (hat is flat outside [0, 2]) and keeps inf - inf out; NaN
    passes through."""
    x = x.clamp(-1.0, 3.0)
    return torch.relu(x) - 2 * torch.relu(x - 1) + torch.relu(x - 2)


def dct_activation(x: Tensor, coeffs: Tensor, *, channel_dim: int = 1,
                   domain: tuple[float, float] = (-1.0, 1.0), frequencies: str = "odd",
                   boundary: str = "periodic") -> Tensor:
    """sum_j coeffs[c, j] * cos(pi * k_j * t) with t = (x - lo) / (hi - lo) (clamped to [0, 1]
    for boundary="clamp"), k_j = 2j + 1 (frequencies="odd") or j ("all"), and c the channel of
    the element along channel_dim (coeffs [K] or [1, K]: one row for every channel).

    Materialises the [..., K] tensor of cosines, as a plain PyTorch implementation does.
    float16/bfloat16 compute in float32 (their own precision would put errors of a few percent
    into the phase pi k t); the result has x's dtype, the coefficient gradient coeffs' dtype.
    Arguments are taken as given: fastact.dct_activation checks them first."""
    t = scaled_input(x, domain, boundary)
    return cosine_series(t, coeffs, channel_dim, frequencies).to(x.dtype)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the elementwise ops compute in: float32 for 16-bit x, else x's."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def scaled_input(x: Tensor, domain: tuple[float, float], boundary: str) -> Tensor:
    """t = (x - lo) / (hi - lo) in the compute dtype, clamped to [0, 1] for boundary="clamp"."""
    lo, hi = (float(v) for v in domain)
    t = (x.to(compute_dtype(x)) - lo) / (hi - lo)
    return t.clamp(0.0, 1.0) if boundary == "clamp" else t


def cosine_series(t: Tensor, coeffs: Tensor, channel_dim: int, frequencies: str) -> Tensor:
    """sum_j coeffs[c, j] * cos(pi * k_j * t) in t's dtype (see dct_activation)."""
    table = coeffs.to(t.dtype).reshape(-1, coeffs.shape[-1])
    num_coeffs = table.shape[1]
    k = torch.arange(num_coeffs, device=t.device, dtype=t.dtype)
    if frequencies == "odd":
        k = 2 * k + 1
    basis = torch.cos(math.pi * k * t.unsqueeze(-1))  # [..., K]
    shape = [1] * t.dim() + [num_coeffs]
    if table.shape[0] != 1:  # one row per channel (zero rows for zero channels)
        shape[channel_dim % t.dim()] = table.shape[0]
    return (basis * table.view(shape)).sum(-1)


def spherical_to_cartesian(theta: Tensor) -> Tensor:
    """u_1 = cos th_1, u_i = (prod_{j<i} sin th_j) cos th_i, u_n = prod_{j<n} sin th_j: the
    cumulative product of [1, sin th_1, ..., sin th_{n-1}] times [cos th_1, ..., cos th_{n-1}, 1].
    (torch's cumprod backward is exact where a sine is 0.)"""
    return unit_vectors(theta, functools.partial(torch.cumprod, dim=-1))


def unit_vectors(theta: Tensor, prefix_product: Callable[[Tensor], Tensor]) -> Tensor:
    """spherical_to_cartesian(theta), with `prefix_product` the cumulative product along the
    last dimension."""
    ones = theta.new_ones((*theta.shape[:-1], 1))
    prefix = prefix_product(torch.cat([ones, torch.sin(theta)], dim=-1))
    return prefix * torch.cat([torch.cos(theta), ones], dim=-1)


def _sqrt_with_zero_gradient_at_zero(t: Tensor) -> Tensor:
    zero = t == 0  # (not "t > 0": a NaN sum of squares gives a NaN radius)
    return torch.where(zero, 0, torch.sqrt(torch.where(zero, 1, t)))


def cartesian_to_spherical(w: Tensor) -> tuple[Tensor, Tensor]:
    """radius = |w|, theta_k = atan2(|w_{k+1:}|, w_k) and the last angle atan2(w_n, w_{n-1}),
    which keeps the sign of w_n; an angle whose coordinates are all zero is 0. Where the map is
    not differentiable (those zeros) the gradient terms are 0."""
    tail = _sqrt_with_zero_gradient_at_zero((w * w).flip(-1).cumsum(-1).flip(-1))  # |w_{k:}|
    y = torch.cat([tail[..., 1:-1], w[..., -1:]], dim=-1)
    x = w[..., :-1]
    undefined = (x == 0) & (y == 0)
    theta = torch.where(undefined, 0, torch.atan2(torch.where(undefined, 1, y),
                                                  torch.where(undefined, 1, x)))
    return tail[..., 0], theta


def geometric_relu(x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None = None) -> Tensor:
    """radius * relu(x @ u.T + bias) with u = spherical_to_cartesian(theta)."""
    u = spherical_to_cartesian(theta)
    return radius * torch.relu(torch.nn.functional.linear(x, u, bias))


def geometric_relu_conv2d(x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None = None, *,
                          kernel_size, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """radius * relu(conv2d(x, U) + bias), U = spherical_to_cartesian(theta).view(out, in/groups,
    kh, kw)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    out = theta.shape[0]
    u = spherical_to_cartesian(theta).view(out, -1, kh, kw)
    pre = torch.nn.functional.conv2d(x, u, bias, stride, padding, dilation, groups)
    return radius.view(-1, 1, 1) * torch.relu(pre)

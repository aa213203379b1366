"""The hyperspherical maps of GmP (Chen & Ge, arXiv 2305.15912): unit directions from angles and
back, the parameterisation the GmP layers (fastact/layer.py) build their weights from.

The ops are `fastact::<op>` (C++, csrc/) and `fastact_triton::<op>` (fastact/triton/sphere.py):
  spherical_to_cartesian(theta) -> u           and its backward
  cartesian_to_spherical(w) -> (radius, theta) and its backward
This module checks arguments, picks the backend, and registers the fake kernels and autograd of
both namespaces; the backward ops are not differentiable again.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastact import _backend, _checks, reference
from fastact import triton as _triton

if _triton.AVAILABLE:
    from fastact.triton import sphere as _triton_sphere  # noqa: F401  (defines the ops)

__all__ = ["spherical_to_cartesian", "cartesian_to_spherical"]


def spherical_to_cartesian(theta: Tensor) -> Tensor:
    """Unit vectors from hyperspherical angles: theta [..., n-1] -> u [..., n] with
    u_1 = cos th_1, u_i = (prod_{j<i} sin th_j) cos th_i, u_n = prod_{j<n} sin th_j.

    The kernels scan each row with products in float64 (|u| = 1 to float32 rounding for rows of
    thousands of angles), in float32 for 16-bit theta (its rounding is far coarser); the backward is the division-free reverse scan, exact where some
    sin th_j = 0 (later angles get gradient 0). Returns a new contiguous tensor of theta's dtype.
    """
    _checks.float_tensor("spherical_to_cartesian", "theta", theta)
    if theta.dim() == 0:
        raise ValueError("fastact.spherical_to_cartesian: theta must have at least one dimension "
                         "(the n-1 angles of each row), got a 0-d tensor")
    backend = _backend.select("spherical_to_cartesian", theta.device)
    if backend == "reference":
        return reference.spherical_to_cartesian(theta)
    return _backend.ops(backend).spherical_to_cartesian(theta)


def cartesian_to_spherical(w: Tensor) -> tuple[Tensor, Tensor]:
    """The exact inverse of spherical_to_cartesian: w [..., n] -> (radius [...], theta [..., n-1])
    with radius * spherical_to_cartesian(theta) == w to rounding, for every w (n >= 2).

    radius = |w|; theta_k = atan2(|w_{k+1:}|, w_k) in [0, pi]; the last angle
    atan2(w_n, w_{n-1}) in (-pi, pi] keeps the sign of w_n. Where an angle is not unique (its
    coordinates w_{k:} are all zero: a zero row, trailing zeros) it is 0. Differentiable; where
    the map is not (those same points) the undefined terms of the gradient are 0.
    """
    _checks.float_tensor("cartesian_to_spherical", "w", w)
    if w.dim() == 0 or w.shape[-1] < 2:
        raise ValueError("fastact.cartesian_to_spherical: w must have at least 2 coordinates in "
                         f"its last dimension, got shape {tuple(w.shape)}")
    backend = _backend.select("cartesian_to_spherical", w.device)
    if backend == "reference":
        return reference.cartesian_to_spherical(w)
    return _backend.ops(backend).cartesian_to_spherical(w)


def _save_input(ctx, inputs, output):
    ctx.save_for_backward(*inputs)  # theta or w, the one input of each map


def _register(namespace: str) -> None:
    ops = getattr(torch.ops, namespace)

    def fake_spherical_to_cartesian(theta):
        return theta.new_empty((*theta.shape[:-1], theta.shape[-1] + 1))

    def fake_spherical_to_cartesian_backward(grad_u, theta):
        return theta.new_empty(theta.shape)

    def spherical_to_cartesian_grad(ctx, grad_u):
        (theta,) = ctx.saved_tensors
        return ops.spherical_to_cartesian_backward(grad_u, theta)

    def fake_cartesian_to_spherical(w):
        return w.new_empty(w.shape[:-1]), w.new_empty((*w.shape[:-1], w.shape[-1] - 1))

    def fake_cartesian_to_spherical_backward(grad_radius, grad_theta, w):
        return w.new_empty(w.shape)

    def cartesian_to_spherical_grad(ctx, grad_radius, grad_theta):
        (w,) = ctx.saved_tensors
        return ops.cartesian_to_spherical_backward(grad_radius, grad_theta, w)

    for name, fake, grad in [
        ("spherical_to_cartesian", fake_spherical_to_cartesian, spherical_to_cartesian_grad),
        ("cartesian_to_spherical", fake_cartesian_to_spherical, cartesian_to_spherical_grad),
    ]:
        torch.library.register_fake(f"{namespace}::{name}", fake)
        _checks.register_autograd(f"{namespace}::{name}", grad, _save_input)
    _checks.register_backward_ops(namespace, {
        "spherical_to_cartesian_backward": fake_spherical_to_cartesian_backward,
        "cartesian_to_spherical_backward": fake_cartesian_to_spherical_backward,
    })


for _namespace in _backend.loaded_namespaces():
    _register(_namespace)

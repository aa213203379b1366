"""Pure-PyTorch references of every fastact op: the plain statement of each formula and the
ground truth of the tests (run in float64). They compute in the input's dtype and get their
gradients from autograd; they run on any device and are the "reference" backend."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["hat", "dct_activation"]


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
    lo, hi = (float(v) for v in domain)
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    table = coeffs.to(compute).reshape(-1, coeffs.shape[-1])
    num_coeffs = table.shape[1]
    t = (x.to(compute) - lo) / (hi - lo)
    if boundary == "clamp":
        t = t.clamp(0.0, 1.0)
    k = torch.arange(num_coeffs, device=x.device, dtype=compute)
    if frequencies == "odd":
        k = 2 * k + 1
    basis = torch.cos(math.pi * k * t.unsqueeze(-1))  # [..., K]
    shape = [1] * x.dim() + [num_coeffs]
    if table.shape[0] > 1:
        shape[channel_dim % x.dim()] = table.shape[0]
    return (basis * table.view(shape)).sum(-1).to(x.dtype)

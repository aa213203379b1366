"""The DCT activation as a PyTorch user would write it, for the speed suite's compiled providers:
the same function as fastact.reference.dct_activation (keyword arguments, 16-bit inputs
computed in float32), formulated in the ways torch.compile might turn into different loops.

  cos_sum     cos(pi k t) as a [..., K] broadcast, times the coefficients, summed over K
  term_loop   a Python loop over K adding coeff_j * cos(pi k_j t): one fused loop, K cosines
  chebyshev   one cosine, then the three-term recurrence cos((j+1)a) = 2 cos(a) cos(ja) -
              cos((j-1)a) unrolled over K (its rounding error grows like j^2 near cos(a) = +-1:
              a formulation for speed, checked against the reference with a wider tolerance)

tests/test_dct.py checks each against fastact.reference.dct_activation.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def _scaled(x: Tensor, domain: tuple[float, float], boundary: str) -> Tensor:
    lo, hi = domain
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    t = (x.to(compute) - lo) / (hi - lo)
    return t.clamp(0.0, 1.0) if boundary == "clamp" else t


def _frequencies(num_coeffs: int, frequencies: str) -> list[int]:
    return [2 * j + 1 if frequencies == "odd" else j for j in range(num_coeffs)]


def _columns(coeffs: Tensor, t: Tensor, channel_dim: int) -> list[Tensor]:
    """coeffs[:, j] shaped to broadcast against t (one row for all channels, or one per
    channel along channel_dim)."""
    table = coeffs.to(t.dtype).reshape(-1, coeffs.shape[-1])
    shape = [1] * t.dim()
    if table.shape[0] != 1:
        shape[channel_dim % t.dim()] = table.shape[0]
    return [table[:, j].reshape(shape) for j in range(table.shape[1])]


def cos_sum(x: Tensor, coeffs: Tensor, *, channel_dim: int = 1,
            domain: tuple[float, float] = (-1.0, 1.0), frequencies: str = "odd",
            boundary: str = "periodic") -> Tensor:
    t = _scaled(x, domain, boundary)
    k = torch.tensor(_frequencies(coeffs.shape[-1], frequencies), dtype=t.dtype,
                     device=t.device)
    table = coeffs.to(t.dtype).reshape(-1, coeffs.shape[-1])
    shape = [1] * t.dim() + [coeffs.shape[-1]]
    if table.shape[0] != 1:
        shape[channel_dim % t.dim()] = table.shape[0]
    return (torch.cos(math.pi * t[..., None] * k) * table.view(shape)).sum(-1).to(x.dtype)


def term_loop(x: Tensor, coeffs: Tensor, *, channel_dim: int = 1,
              domain: tuple[float, float] = (-1.0, 1.0), frequencies: str = "odd",
              boundary: str = "periodic") -> Tensor:
    t = _scaled(x, domain, boundary)
    columns = _columns(coeffs, t, channel_dim)
    y = 0
    for k, column in zip(_frequencies(len(columns), frequencies), columns):
        y = y + column * torch.cos((math.pi * k) * t)
    return y.to(x.dtype)


def chebyshev(x: Tensor, coeffs: Tensor, *, channel_dim: int = 1,
              domain: tuple[float, float] = (-1.0, 1.0), frequencies: str = "odd",
              boundary: str = "periodic") -> Tensor:
    t = _scaled(x, domain, boundary)
    columns = _columns(coeffs, t, channel_dim)
    a = math.pi * t
    if frequencies == "odd":
        # cos((2j + 1) a): steps of 2a from cos(-a) = cos(a), cos(a).
        previous = current = torch.cos(a)
        twice_cos_step = 2 * torch.cos(2 * a)
    else:
        # cos(j a): from cos(-a) = cos(a), cos(0) = 1 (as the reference's cos(0 a), a
        # function of a: NaN for NaN x, and in the autograd graph).
        previous, current = torch.cos(a), a * 0 + 1
        twice_cos_step = 2 * previous
    y = columns[0] * current
    for column in columns[1:]:
        previous, current = current, twice_cos_step * current - previous
        y = y + column * current
    return y.to(x.dtype)


FORMULATIONS: dict[str, Callable[..., Tensor]] = {
    "cos_sum": cos_sum, "term_loop": term_loop, "chebyshev": chebyshev}

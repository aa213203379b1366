"""Drop-in torch.nn modules for fastact's activations."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fastact import dct as _dct
from fastact.hat import hat

__all__ = ["Hat", "DCTActivation"]


class Hat(nn.Module):
    """Hat activation, a drop-in for nn.ReLU: max(0, 1 - |x - 1|) elementwise.

    Shape: any; the output has the input's shape, dtype and layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        return hat(x)


class DCTActivation(nn.Module):
    """DCT-basis activation (ENN), a learnable cosine series per channel:
    y = sum_j coeffs[c, j] * cos(pi * k_j * (x - lo) / (hi - lo)) (see fastact.dct_activation).

    Args:
        num_channels: C, the size of x along channel_dim; 1 shares one series between all
            channels (as nn.PReLU(1)).
        num_coeffs: K, terms per series (ENN uses 6).
        channel_dim: the dimension of x indexing channels (1 for [N, C, ...], -1 for [B, T, C]).
        domain, frequencies, boundary: as fastact.dct_activation.
        init: "identity" (f(x) ~ x on the domain, the ENN initialisation), "relu"
            (f ~ relu), "zeros", or a tensor of shape [num_channels, num_coeffs] or
            [num_coeffs]. "identity" and "relu" are the float64 least-squares fit of the
            target by the K basis functions on a fine uniform grid over the domain.

    Parameter: coeffs, [num_channels, num_coeffs].
    """

    def __init__(self, num_channels: int, num_coeffs: int = 6, *, channel_dim: int = 1,
                 domain: tuple[float, float] = (-1.0, 1.0), frequencies: str = "odd",
                 boundary: str = "periodic", init="identity", device=None, dtype=None):
        super().__init__()
        for name, value in (("num_channels", num_channels), ("num_coeffs", num_coeffs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"fastact.nn.DCTActivation: {name} must be a positive int, "
                                 f"got {value!r}")
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise TypeError(f"fastact.nn.DCTActivation: channel_dim must be an int, got "
                            f"{channel_dim!r}")
        _dct._choice("frequencies", frequencies, _dct.FREQUENCIES)
        _dct._choice("boundary", boundary, _dct.BOUNDARIES)
        if isinstance(init, Tensor):
            if init.shape not in ((num_channels, num_coeffs), (num_coeffs,)):
                raise ValueError(f"fastact.nn.DCTActivation: an init tensor must have shape "
                                 f"[{num_channels}, {num_coeffs}] or [{num_coeffs}], got "
                                 f"{tuple(init.shape)}")
            init = init.detach().clone()
        elif init not in ("identity", "relu", "zeros"):
            raise ValueError(f"fastact.nn.DCTActivation: init must be 'identity', 'relu', "
                             f"'zeros' or a tensor, got {init!r}")
        self.num_channels = num_channels
        self.num_coeffs = num_coeffs
        self.channel_dim = channel_dim
        self.domain = _dct._domain(domain)
        self.frequencies = frequencies
        self.boundary = boundary
        self.init = init
        self.coeffs = nn.Parameter(torch.empty(num_channels, num_coeffs, device=device,
                                               dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Sets coeffs from `init` again."""
        if isinstance(self.init, Tensor):
            values = self.init
        elif self.init == "zeros":
            values = torch.zeros(self.num_coeffs)
        else:
            values = fit_coeffs(torch.relu if self.init == "relu" else (lambda x: x),
                                self.num_coeffs, domain=self.domain, frequencies=self.frequencies)
        with torch.no_grad():
            self.coeffs.copy_(values.to(self.coeffs.dtype).expand_as(self.coeffs))

    def forward(self, x: Tensor) -> Tensor:
        return _dct.dct_activation(x, self.coeffs, channel_dim=self.channel_dim,
                                   domain=self.domain, frequencies=self.frequencies,
                                   boundary=self.boundary)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, num_coeffs={self.num_coeffs}, "
                f"channel_dim={self.channel_dim}, domain={self.domain}, "
                f"frequencies={self.frequencies!r}, boundary={self.boundary!r}")


def fit_coeffs(target, num_coeffs: int, *, domain: tuple[float, float] = (-1.0, 1.0),
               frequencies: str = "odd", samples: int = 8192) -> Tensor:
    """The K coefficients (float64, [K]) of the least-squares fit of target(x) by the basis
    cos(pi k_j t), t = (x - lo) / (hi - lo), on `samples` midpoints of the domain. On midpoints
    the basis is orthogonal (DCT-II), so this is the projection of the target: for the identity
    on (-1, 1) and the odd basis, F_j = -8 / (pi k_j)^2."""
    lo, hi = _dct._domain(domain)
    t = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples
    k = torch.arange(num_coeffs, dtype=torch.float64)
    if frequencies == "odd":
        k = 2 * k + 1
    basis = torch.cos(math.pi * k * t[:, None])
    values = target(lo + (hi - lo) * t)
    return torch.linalg.lstsq(basis, values[:, None]).solution[:, 0]

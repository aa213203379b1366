"""fastact.nn.DCTActivation, the module of the DCT-basis activation (ENN, fastact/dct.py), and
fit_coeffs, the least-squares fit that initialises it."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fastact import dct as _dct
from fastact._checks import NotScriptable
from fastact.dct import dct_series

# The initial coefficients of every ENN activation in the authors' code (the ENN class of
# github.com/marcmartinezgost/enn), before their 2 / nft scale: the odd DCT-II coefficients of the
# identity ramp, rounded; close to -8 / (pi k)^2 * nft / 2 but not equal (the 6th by 12%).
ENN_CONSTANTS = (-207.6068, -23.1526, -8.3292, -4.2629, -2.5883, -1.5147)

torch.fx.wrap("dct_series")  # one node in a torch.fx graph (see fastact/nn/__init__.py)


class DCTActivation(NotScriptable, nn.Module):
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
            target by the K basis functions on a fine uniform grid over the domain. The odd
            basis is odd about the middle of the domain, so with frequencies="odd" the "relu"
            fit is relu's odd part there (x / 2 on (-1, 1)): use frequencies="all".

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
        _dct.check_choice("frequencies", frequencies, _dct.FREQUENCIES)
        _dct.check_choice("boundary", boundary, _dct.BOUNDARIES)
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
        self.domain = _dct.domain_of(domain)
        self.frequencies = frequencies
        self.boundary = boundary
        self.init = init
        self.coeffs = nn.Parameter(torch.empty(num_channels, num_coeffs, device=device,
                                               dtype=dtype))
        self.reset_parameters()

    @classmethod
    def enn(cls, num_channels: int, nft: int = 512, *, channel_dim: int = 1, device=None,
            dtype=None) -> "DCTActivation":
        """The ENN authors' activation, as their code (the `ENN` class of Martinez-Gost et al.)
        computes it: sum_q F_q cos(pi (2q - 1) (2 zbar - 1) / (2 nft)), zbar = nft (z + 1) / 2,
        which is this module with six odd frequencies on the domain (-1 + 1/nft, 1 + 1/nft),
        periodic, every channel starting from their constants
        (2 / nft) * [-207.6068, -23.1526, -8.3292, -4.2629, -2.5883, -1.5147] (close to the
        identity for nft = 512), computed in float32 as theirs are.

        Their hidden layer is DCTActivation.enn(hidden, channel_dim=-1) on [batch, hidden] (1
        and -1 are the same dimension there); their output layer shares one series between the
        outputs: DCTActivation.enn(1).
        """
        if isinstance(nft, bool) or not isinstance(nft, int) or nft < 1:
            raise ValueError(f"fastact.nn.DCTActivation.enn: nft must be a positive int, got "
                             f"{nft!r}")
        init = (2 / nft) * torch.tensor(ENN_CONSTANTS, dtype=torch.float32)
        return cls(num_channels, len(ENN_CONSTANTS), channel_dim=channel_dim,
                   domain=(-1 + 1 / nft, 1 + 1 / nft), frequencies="odd", boundary="periodic",
                   init=init, device=device, dtype=dtype)

    def initial_coeffs(self) -> Tensor:
        """The coefficients `init` gives, [num_coeffs] or [num_channels, num_coeffs] (float64
        for "identity" and "relu", the init tensor's dtype for a tensor)."""
        if isinstance(self.init, Tensor):
            return self.init
        if self.init == "zeros":
            return torch.zeros(self.num_coeffs, dtype=torch.float64)
        return fit_coeffs(torch.relu if self.init == "relu" else (lambda x: x), self.num_coeffs,
                          domain=self.domain, frequencies=self.frequencies)

    def reset_parameters(self) -> None:
        """Sets coeffs from `init` again."""
        with torch.no_grad():
            self.coeffs.copy_(self.initial_coeffs().to(self.coeffs.dtype).expand_as(self.coeffs))

    def forward(self, x: Tensor) -> Tensor:
        # The basis arguments were checked at construction: only the tensors are, per call.
        return dct_series(x, self.coeffs, self.channel_dim, *self.domain,
                          self.frequencies == "odd", self.boundary == "clamp")

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
    lo, hi = _dct.domain_of(domain)
    t = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples
    k = torch.arange(num_coeffs, dtype=torch.float64)
    if frequencies == "odd":
        k = 2 * k + 1
    basis = torch.cos(math.pi * k * t[:, None])
    values = target(lo + (hi - lo) * t)
    return torch.linalg.lstsq(basis, values[:, None]).solution[:, 0]

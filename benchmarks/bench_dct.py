"""DCT-activation speed cases: fastact vs the eager and compiled reference vs the memory-bound
limit, for x [N, C] with one series per channel (channel_dim=1), K = 6 (ENN's) and 16."""

from __future__ import annotations

import torch

import fastact
from harness import MODES, Case, compiled, fastact_backends, timed_modes, with_backend

# [rows, channels]: a size far out of cache and one that fits in L2.
SIZES = {"4096x1024": (4096, 1024), "256x256": (256, 256)}
NUM_COEFFS = (6, 16)
# The quick run (and the regression check) takes the large size at ENN's K: every other
# (dtype, K) costs two more torch.compile runs of the reference (~10 s each here).
QUICK_SIZES = {"4096x1024": (4096, 1024)}
QUICK_NUM_COEFFS = (6,)


def limit(x: torch.Tensor, g: torch.Tensor, mode: str):
    """Native ops moving the bytes of the activation: a forward reads x and writes y
    (x.clone()); the backward reads g and x and writes dx (torch.add(g, x)); the coefficients
    and their gradient are a few KiB."""
    if mode == "forward":
        return lambda: x.clone()
    if mode == "backward":
        return lambda: torch.add(g, x)
    return lambda: (x.clone(), torch.add(g, x))


def reference(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    return fastact.reference.dct_activation(x, coeffs, channel_dim=1)


def activation(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    return fastact.dct_activation(x, coeffs, channel_dim=1)


def cases(device: str, dtypes: list[torch.dtype], quick: bool):
    compiled_reference = compiled(reference)
    for size, (rows, channels) in (QUICK_SIZES if quick else SIZES).items():
        for num_coeffs in (QUICK_NUM_COEFFS if quick else NUM_COEFFS):
            for dtype in dtypes:
                x = (torch.randn(rows, channels, device=device) * 0.7).to(dtype).requires_grad_()
                coeffs = fastact.nn.fit_coeffs(lambda v: v, num_coeffs).to(device, dtype)
                coeffs = coeffs.expand(channels, num_coeffs).contiguous().requires_grad_()
                g = torch.randn(rows, channels, device=device).to(dtype)
                for mode in MODES:
                    case = Case("dct_activation", mode, str(dtype).removeprefix("torch."),
                                f"{size} K={num_coeffs}", rows * channels,
                                limit_name={"forward": "x.clone()", "backward": "torch.add(g, x)"}
                                .get(mode, "x.clone() + torch.add(g, x)"))
                    for backend in fastact_backends(device):
                        case.providers[f"fastact[{backend}]"] = timed_modes(
                            with_backend(backend, activation), [x, coeffs], g, mode)
                    case.providers["eager"] = timed_modes(reference, [x, coeffs], g, mode)
                    case.providers["compiled"] = timed_modes(compiled_reference, [x, coeffs], g,
                                                             mode)
                    case.providers["limit"] = limit(x.detach(), g, mode)
                    yield case

"""spherical_to_cartesian speed cases: fastact vs the cumprod reference (eager, compiled); the
limit is an elementwise pass over the same bytes: theta.clone() (forward), torch.add(g, theta)
(backward)."""

from __future__ import annotations

import math

import torch

import fastact
from geometric_helpers import compiled, dtype_name
from harness import MODES, Case, fastact_backends, timed_modes, with_backend

# rows x angles. Quick: the regression check's size, theta 1 MiB in float32 (in L2).
SIZES = {"256x1023": (256, 1023), "1024x4607": (1024, 4607), "4096x1023": (4096, 1023)}
QUICK_SIZES = {"256x1023": (256, 1023)}


def limit(theta: torch.Tensor, g: torch.Tensor, mode: str):
    g_angles = g[..., :-1].contiguous()
    if mode == "forward":
        return lambda: theta.clone()
    if mode == "backward":
        return lambda: torch.add(g_angles, theta)
    return lambda: (theta.clone(), torch.add(g_angles, theta))


def cases(device: str, dtypes: list[torch.dtype], quick: bool):
    reference = fastact.reference.spherical_to_cartesian
    compiled_reference = compiled(reference)
    for size, (rows, angles) in (QUICK_SIZES if quick else SIZES).items():
        for dtype in dtypes:
            theta = (torch.rand(rows, angles, device=device) * math.pi).to(dtype).requires_grad_()
            g = torch.randn(rows, angles + 1, device=device).to(dtype)
            for mode in MODES:
                limit_name = {"forward": "theta.clone()", "backward": "torch.add(g, theta)"}.get(
                    mode, "theta.clone() + torch.add(g, theta)")
                case = Case("spherical_to_cartesian", mode, dtype_name(dtype), size,
                            theta.numel(), limit_name=limit_name)
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, fastact.spherical_to_cartesian), [theta], g, mode)
                case.providers["eager"] = timed_modes(reference, [theta], g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, [theta], g, mode)
                case.providers["limit"] = limit(theta.detach(), g, mode)
                yield case

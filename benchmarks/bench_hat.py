"""Hat speed cases: fastact vs the eager and compiled reference vs the memory-bound limit."""

from __future__ import annotations

import torch

import fastact
from harness import MODES, Case, compiled, fastact_backends, timed_modes, with_backend

SIZES = {"2^16": 2**16, "2^20": 2**20, "2^24": 2**24}
# One size, the regression check's: its tensors (1 MiB in float32) stay in this core's L2
# cache, where the ratios are steady on a shared machine; in L3 (2^20) they vary with what
# the other processes do (see docs/benchmarks.md).
QUICK_SIZES = {"2^18": 2**18}


def limit(x: torch.Tensor, g: torch.Tensor, mode: str):
    """Native ops moving the bytes of hat: a forward reads x and writes y (x.clone()); the
    backward reads g and x and writes dx (torch.add(g, x))."""
    if mode == "forward":
        return lambda: x.clone()
    if mode == "backward":
        return lambda: torch.add(g, x)
    return lambda: (x.clone(), torch.add(g, x))


def cases(device: str, dtypes: list[torch.dtype], quick: bool):
    compiled_reference = compiled(fastact.reference.hat)
    for size, numel in (QUICK_SIZES if quick else SIZES).items():
        for dtype in dtypes:
            x = (torch.randn(numel, device=device) * 1.5 + 1).to(dtype).requires_grad_()
            g = torch.randn(numel, device=device).to(dtype)
            for mode in MODES:
                case = Case("hat", mode, str(dtype).removeprefix("torch."), size, numel,
                            limit_name={"forward": "x.clone()", "backward": "torch.add(g, x)"}
                            .get(mode, "x.clone() + torch.add(g, x)"))
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, fastact.hat), [x], g, mode)
                case.providers["eager"] = timed_modes(fastact.reference.hat, [x], g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, [x], g, mode)
                case.providers["limit"] = limit(x.detach(), g, mode)
                yield case

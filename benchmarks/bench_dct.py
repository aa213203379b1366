"""DCT-activation speed cases: fastact vs the eager reference, the compiled reference and the
fastest formulation of the same function under torch.compile, and the memory-bound limit, for
x [rows, channels] with one series per channel (channel_dim=1), at K = 16 and at ENN's K = 6.

"compiled" is the Chebyshev recurrence of dct_formulations.py, the fastest of its formulations
under torch.compile on CPU (4096x1024 K=6 float32, one thread, ms forward / forward+backward:
chebyshev 16.6 / 51, cos_sum 18.4 / 316, term_loop 172 / 220, the reference 172 / 274; at
K = 16 the three but term_loop are within the noise of each other forward). "compiled[reference]"
is fastact.reference.dct_activation under torch.compile; the report's "vs compiled" counts
against the faster of the two (run.py)."""

from __future__ import annotations

import torch

import fastact
from dct_formulations import chebyshev
from harness import MODES, Case, compiled, fastact_backends, timed_modes, with_backend

# label -> (rows, channels, K). 256x1024 float32 is 1 MiB (in L2), 4096x1024 is 16 MiB. At
# each size K = 16 comes first: memory.py measures the first largest case, and the memory
# budget is stated at K = 16.
SIZES = {
    "256x1024 K=16": (256, 1024, 16),
    "256x1024 K=6": (256, 1024, 6),
    "4096x1024 K=16": (4096, 1024, 16),
    "4096x1024 K=6": (4096, 1024, 6),
}
# The regression check's one size: ~1 MiB, ENN's K (every other (dtype, K) costs two more
# torch.compile runs of the reference, ~10 s each here).
QUICK_SIZES = {"256x1024 K=6": (256, 1024, 6)}


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


def formulation(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    return chebyshev(x, coeffs, channel_dim=1)


def activation(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    return fastact.dct_activation(x, coeffs, channel_dim=1)


def cases(device: str, dtypes: list[torch.dtype], quick: bool):
    compiled_reference, compiled_formulation = compiled(reference), compiled(formulation)
    for size, (rows, channels, num_coeffs) in (QUICK_SIZES if quick else SIZES).items():
        for dtype in dtypes:
            x = (torch.randn(rows, channels, device=device) * 0.7).to(dtype).requires_grad_()
            # ENN's identity initialisation, one series per channel.
            coeffs = fastact.nn.fit_coeffs(lambda v: v, num_coeffs).to(device, dtype)
            coeffs = coeffs.expand(channels, num_coeffs).contiguous().requires_grad_()
            g = torch.randn(rows, channels, device=device).to(dtype)
            for mode in MODES:
                case = Case("dct_activation", mode, str(dtype).removeprefix("torch."), size,
                            rows * channels,
                            limit_name={"forward": "x.clone()", "backward": "torch.add(g, x)"}
                            .get(mode, "x.clone() + torch.add(g, x)"))
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, activation), [x, coeffs], g, mode)
                case.providers["eager"] = timed_modes(reference, [x, coeffs], g, mode)
                case.providers["compiled"] = timed_modes(compiled_formulation, [x, coeffs], g,
                                                         mode)
                case.providers["compiled[reference]"] = timed_modes(compiled_reference,
                                                                    [x, coeffs], g, mode)
                case.providers["limit"] = limit(x.detach(), g, mode)
                yield case

"""Call cost: the fastact.nn modules on the small tensors of the papers' models (ENN's batch of
one, digit MLPs, GmP layers at inference), where the fixed cost of a call (Python, checks,
dispatcher, autograd node, allocation) outweighs the kernel. The limit is the native module the
activation replaces, called the same way:

  hat_call               fastact.nn.Hat vs nn.ReLU
  dct_call               fastact.nn.DCTActivation(C, 6) vs nn.ReLU; eager/compiled: the ENN
                         authors' formulation (their ENN class's activation, learnable F)
  geometric_relu_frozen  fastact.nn.GeometricReLU in eval with its parameters frozen (the
                         directions cache) vs nn.Linear + nn.ReLU, under no_grad; backward
                         modes: the input's gradient

Forward runs under no_grad (inference); forward+backward is one training step's activation
(gradients of x and the module's parameters).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

import fastact
from geometric_helpers import dtype_name
from harness import Case, compiled, fastact_backends, timed_modes, with_backend

MODES = ("forward", "forward+backward")
# [batch, channels]: ENN's 2-D tasks (1 x 6), a digits MLP layer (64 x 128), a wide layer.
ACTIVATION_SIZES = {"1x6": (1, 6), "64x128": (64, 128), "256x1024": (256, 1024)}
ACTIVATION_QUICK = {"64x128": (64, 128)}
# batch x in x out
LAYER_SIZES = {"8x512x512": (8, 512, 512), "256x512x512": (256, 512, 512),
               "8x4096x4096": (8, 4096, 4096)}
LAYER_QUICK = {"8x512x512": (8, 512, 512)}


def module_call(module: nn.Module):
    """module's forward as a function of (x, *parameters), the form timed_modes takes."""
    return lambda x, *parameters: module(x)


def enn_authors(channels: int, nft: int = 512):
    """The ENN authors' activation (their ENN class's forward, hidden layer) with learnable
    coefficients F [channels, 6]: sum_q F_q cos(pi (2q - 1) (2 zbar - 1) / (2 nft))."""
    frequencies = torch.arange(2, 13, 2).tile(channels, 1)
    F = nn.Parameter((2 / nft) * torch.tensor(
        [-207.6068, -23.1526, -8.3292, -4.2629, -2.5883, -1.5147]).tile(channels, 1))

    def forward(z, F):
        scaled = ((z[..., None] + 1) / 2) * nft
        basis = F * torch.cos((math.pi / (2 * nft)) * (frequencies - 1) * (2 * scaled - 1))
        return torch.sum(basis, -1)

    return forward, F


def activation_cases(op: str, make, device: str, dtypes, quick: bool):
    for size, (batch, channels) in (ACTIVATION_QUICK if quick else ACTIVATION_SIZES).items():
        if torch.float32 not in dtypes:
            return
        torch.manual_seed(0)
        x = torch.randn(batch, channels, device=device).requires_grad_()
        g = torch.randn(batch, channels, device=device)
        module = make(channels).to(device)
        parameters = [p for p in module.parameters()]
        relu = nn.ReLU()
        for mode in MODES:
            case = Case(op, mode, "float32", size, batch * channels, limit_name="nn.ReLU")
            for backend in fastact_backends(device):
                case.providers[f"fastact[{backend}]"] = timed_modes(
                    with_backend(backend, module_call(module)), [x, *parameters], g, mode)
            if op == "dct_call":
                authors, F = enn_authors(channels)
                F = F.to(device)
                case.providers["eager"] = timed_modes(authors, [x, F], g, mode)
                case.providers["compiled"] = timed_modes(compiled(authors), [x, F], g, mode)
            case.providers["limit"] = timed_modes(module_call(relu), [x], g, mode)
            yield case


def hat_cases(device: str, dtypes: list[torch.dtype], quick: bool):
    yield from activation_cases("hat_call", lambda channels: fastact.nn.Hat(), device, dtypes,
                                quick)


def dct_cases(device: str, dtypes: list[torch.dtype], quick: bool):
    yield from activation_cases("dct_call", lambda channels: fastact.nn.DCTActivation(channels),
                                device, dtypes, quick)


def frozen_layer_cases(device: str, dtypes: list[torch.dtype], quick: bool):
    for size, (batch, fan_in, out) in (LAYER_QUICK if quick else LAYER_SIZES).items():
        for dtype in dtypes:
            torch.manual_seed(0)
            linear = nn.Linear(fan_in, out, device=device, dtype=dtype)
            plain = nn.Sequential(linear, nn.ReLU()).eval().requires_grad_(False)
            layer = fastact.nn.GeometricReLU.from_linear(linear).eval().requires_grad_(False)
            x = torch.randn(batch, fan_in, device=device).to(dtype).requires_grad_()
            g = torch.randn(batch, out, device=device).to(dtype)
            for mode in MODES:
                case = Case("geometric_relu_frozen", mode, dtype_name(dtype), size, batch * out,
                            limit_name="nn.Linear+nn.ReLU")
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, module_call(layer)), [x], g, mode)
                case.providers["limit"] = timed_modes(module_call(plain), [x], g, mode)
                yield case


# The section's ops as cases.py registers them (MEMORY: no peak-memory table for small tensors).
hat = SimpleNamespace(cases=hat_cases, SIZES=ACTIVATION_SIZES, QUICK_SIZES=ACTIVATION_QUICK,
                      MEMORY=False)
dct = SimpleNamespace(cases=dct_cases, SIZES=ACTIVATION_SIZES, QUICK_SIZES=ACTIVATION_QUICK,
                      MEMORY=False)
geometric_relu_frozen = SimpleNamespace(cases=frozen_layer_cases, SIZES=LAYER_SIZES,
                                        QUICK_SIZES=LAYER_QUICK, MEMORY=False)

"""GeometricReLU speed cases: the layer (x, theta, radius and bias all trained) vs the reference
layer (eager, compiled); the limit is nn.Linear + nn.ReLU of the same shape, the cost fastact
aims at."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fastact
from geometric_helpers import compiled, dtype_name, layer_parameters
from harness import MODES, Case, fastact_backends, timed_modes, with_backend

# batch x in x out. Quick: the regression check's size (x, z and theta about 1 MiB).
SIZES = {"256x512x512": (256, 512, 512), "1024x1024x1024": (1024, 1024, 1024),
         "4096x256x256": (4096, 256, 256)}
QUICK_SIZES = {"256x512x512": (256, 512, 512)}


def linear_relu(x, weight, bias):
    return torch.relu(F.linear(x, weight, bias))


def cases(device: str, dtypes: list[torch.dtype], quick: bool):
    reference = fastact.reference.geometric_relu
    compiled_reference = compiled(reference)
    for size, (batch, fan_in, out) in (QUICK_SIZES if quick else SIZES).items():
        for dtype in dtypes:
            x = torch.randn(batch, fan_in, device=device).to(dtype).requires_grad_()
            (theta, radius, bias), weight = layer_parameters(out, fan_in, device, dtype)
            linear = [x, weight.clone().requires_grad_(), bias.detach().clone().requires_grad_()]
            g = torch.randn(batch, out, device=device).to(dtype)
            inputs = [x, theta, radius, bias]
            for mode in MODES:
                case = Case("geometric_relu", mode, dtype_name(dtype), size, batch * out,
                            limit_name="nn.Linear+nn.ReLU")
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, fastact.geometric_relu), inputs, g, mode)
                case.providers["eager"] = timed_modes(reference, inputs, g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, inputs, g, mode)
                case.providers["limit"] = timed_modes(linear_relu, linear, g, mode)
                yield case

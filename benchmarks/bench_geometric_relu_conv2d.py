"""GeometricReLUConv2d speed cases (3x3 filters, padding 1): the layer vs the reference layer
(eager, compiled); the limit is nn.Conv2d + nn.ReLU of the same shape."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fastact
from geometric_helpers import compiled, dtype_name, layer_parameters
from harness import MODES, Case, fastact_backends, timed_modes, with_backend

# batch x in channels x out channels x side. Quick: the regression check's size.
SIZES = {"8x32x32x16x16": (8, 32, 32, 16), "32x64x64x32x32": (32, 64, 64, 32)}
QUICK_SIZES = {"8x32x32x16x16": (8, 32, 32, 16)}


def conv_relu(x, weight, bias):
    return torch.relu(F.conv2d(x, weight, bias, padding=1))


def cases(device: str, dtypes: list[torch.dtype], quick: bool):
    reference = functools.partial(fastact.reference.geometric_relu_conv2d, kernel_size=3,
                                  padding=1)
    layer = functools.partial(fastact.geometric_relu_conv2d, kernel_size=3, padding=1)
    compiled_reference = compiled(reference)
    for size, (batch, channels, out, side) in (QUICK_SIZES if quick else SIZES).items():
        for dtype in dtypes:
            x = torch.randn(batch, channels, side, side, device=device).to(dtype).requires_grad_()
            (theta, radius, bias), weight = layer_parameters(out, channels * 9, device, dtype)
            conv = [x, weight.view(out, channels, 3, 3).clone().requires_grad_(),
                    bias.detach().clone().requires_grad_()]
            g = torch.randn(batch, out, side, side, device=device).to(dtype)
            inputs = [x, theta, radius, bias]
            for mode in MODES:
                case = Case("geometric_relu_conv2d", mode, dtype_name(dtype), size, g.numel(),
                            limit_name="nn.Conv2d+nn.ReLU")
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, layer), inputs, g, mode)
                case.providers["eager"] = timed_modes(reference, inputs, g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, inputs, g, mode)
                case.providers["limit"] = timed_modes(conv_relu, conv, g, mode)
                yield case

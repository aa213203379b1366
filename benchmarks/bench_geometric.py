"""GmP speed cases: the hyperspherical map and the GeometricReLU / GeometricReLUConv2d layers.

spherical_to_cartesian: fastact vs the cumprod reference (eager, compiled); the limit is
  theta.clone() (forward) / torch.add(g, theta) (backward), the bytes an elementwise pass moves.
geometric_relu: the layer (x, theta, radius, bias all trained) vs the reference layer (eager,
  compiled); the limit is nn.Linear + nn.ReLU of the same shape, the cost fastact aims at.
geometric_relu_conv2d: the same against nn.Conv2d + nn.ReLU (3x3, padding 1).
--quick: smaller sizes, forward+backward only.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

import fastact
from harness import MODES, Case, compiled, fastact_backends, timed_modes, with_backend

# A quick run times forward+backward only (the mode a training step runs), to stay within a
# minute for the three ops.
QUICK_MODES = ("forward+backward",)

MAP_SIZES = {"1024x4607": (1024, 4607), "4096x1023": (4096, 1023)}
MAP_QUICK_SIZES = {"256x1023": (256, 1023)}
# (batch, in, out)
LAYER_SIZES = {"1024x1024x1024": (1024, 1024, 1024), "4096x256x256": (4096, 256, 256)}
LAYER_QUICK_SIZES = {"256x512x512": (256, 512, 512)}
# (batch, in channels, out channels, height = width); 3x3 filters, padding 1
CONV_SIZES = {"32x64x64x32x32": (32, 64, 64, 32)}
CONV_QUICK_SIZES = {"8x32x32x16x16": (8, 32, 32, 16)}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _map_limit(theta: torch.Tensor, g: torch.Tensor, mode: str):
    """An elementwise pass over the same bytes: read theta, write u (forward); read g and theta,
    write the gradient (backward)."""
    g_angles = g[..., :-1].contiguous()
    if mode == "forward":
        return lambda: theta.clone()
    if mode == "backward":
        return lambda: torch.add(g_angles, theta)
    return lambda: (theta.clone(), torch.add(g_angles, theta))


def map_cases(device: str, dtypes: list[torch.dtype], quick: bool):
    reference = fastact.reference.spherical_to_cartesian
    compiled_reference = compiled(reference)
    for size, (rows, angles) in (MAP_QUICK_SIZES if quick else MAP_SIZES).items():
        for dtype in dtypes:
            theta = (torch.rand(rows, angles, device=device) * math.pi).to(dtype).requires_grad_()
            g = torch.randn(rows, angles + 1, device=device).to(dtype)
            for mode in (QUICK_MODES if quick else MODES):
                case = Case("spherical_to_cartesian", mode, _dtype_name(dtype), size, theta.numel(),
                            limit_name={"forward": "theta.clone()", "backward": "torch.add(g, theta)"}
                            .get(mode, "theta.clone() + torch.add(g, theta)"))
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, fastact.spherical_to_cartesian), [theta], g, mode)
                case.providers["eager"] = timed_modes(reference, [theta], g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, [theta], g, mode)
                case.providers["limit"] = _map_limit(theta.detach(), g, mode)
                yield case


def _layer_parameters(out: int, fan_in: int, device: str, dtype: torch.dtype):
    """theta, radius, bias of a default-initialised layer (Kaiming-uniform weights)."""
    weight = torch.empty(out, fan_in, device=device)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    radius, theta = fastact.cartesian_to_spherical(weight)
    bias = torch.randn(out, device=device) * 0.1
    return [t.to(dtype).requires_grad_() for t in (theta, radius, bias)], weight.to(dtype)


def _linear_relu(x, weight, bias):
    return torch.relu(F.linear(x, weight, bias))


def layer_cases(device: str, dtypes: list[torch.dtype], quick: bool):
    reference = fastact.reference.geometric_relu
    compiled_reference = compiled(reference)
    for size, (batch, fan_in, out) in (LAYER_QUICK_SIZES if quick else LAYER_SIZES).items():
        for dtype in dtypes:
            x = torch.randn(batch, fan_in, device=device).to(dtype).requires_grad_()
            (theta, radius, bias), weight = _layer_parameters(out, fan_in, device, dtype)
            linear_weight = weight.clone().requires_grad_()
            linear_bias = bias.detach().clone().requires_grad_()
            g = torch.randn(batch, out, device=device).to(dtype)
            inputs = [x, theta, radius, bias]
            for mode in (QUICK_MODES if quick else MODES):
                case = Case("geometric_relu", mode, _dtype_name(dtype), size, batch * out,
                            limit_name="nn.Linear+nn.ReLU")
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, fastact.geometric_relu), inputs, g, mode)
                case.providers["eager"] = timed_modes(reference, inputs, g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, inputs, g, mode)
                case.providers["limit"] = timed_modes(_linear_relu, [x, linear_weight, linear_bias],
                                                      g, mode)
                yield case


def _conv_relu(x, weight, bias):
    return torch.relu(F.conv2d(x, weight, bias, padding=1))


def conv_cases(device: str, dtypes: list[torch.dtype], quick: bool):
    reference = functools.partial(fastact.reference.geometric_relu_conv2d, kernel_size=3, padding=1)
    layer = functools.partial(fastact.geometric_relu_conv2d, kernel_size=3, padding=1)
    compiled_reference = compiled(reference)
    for size, (batch, channels, out, side) in (CONV_QUICK_SIZES if quick else CONV_SIZES).items():
        for dtype in dtypes:
            x = torch.randn(batch, channels, side, side, device=device).to(dtype).requires_grad_()
            (theta, radius, bias), weight = _layer_parameters(out, channels * 9, device, dtype)
            conv_weight = weight.view(out, channels, 3, 3).clone().requires_grad_()
            conv_bias = bias.detach().clone().requires_grad_()
            g = torch.randn(batch, out, side, side, device=device).to(dtype)
            inputs = [x, theta, radius, bias]
            for mode in (QUICK_MODES if quick else MODES):
                case = Case("geometric_relu_conv2d", mode, _dtype_name(dtype), size, g.numel(),
                            limit_name="nn.Conv2d+nn.ReLU")
                for backend in fastact_backends(device):
                    case.providers[f"fastact[{backend}]"] = timed_modes(
                        with_backend(backend, layer), inputs, g, mode)
                case.providers["eager"] = timed_modes(reference, inputs, g, mode)
                case.providers["compiled"] = timed_modes(compiled_reference, inputs, g, mode)
                case.providers["limit"] = timed_modes(_conv_relu, [x, conv_weight, conv_bias], g,
                                                      mode)
                yield case

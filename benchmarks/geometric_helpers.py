"""Shared by the GmP speed cases (bench_spherical_to_cartesian.py, bench_geometric_relu.py,
bench_geometric_relu_conv2d.py): the compiled reference, parameters of a default-initialised
layer."""

from __future__ import annotations

import math

import torch

import fastact
from harness import compiled as compiled_fullgraph


def compiled(fn):
    """torch.compile of fn, with a backward that keeps its buffers: the suite's backward-only
    mode replays one graph (retain_graph=True), which donated buffers forbid."""
    compiled_fn = compiled_fullgraph(fn)

    def run(*args, **kwargs):
        with torch._functorch.config.patch(donated_buffer=False):
            return compiled_fn(*args, **kwargs)

    return run


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def layer_parameters(out: int, fan_in: int, device: str, dtype: torch.dtype):
    """(theta, radius, bias) of a default-initialised layer (Kaiming-uniform weights, bias
    ~0.1), all trained, and the weights themselves."""
    weight = torch.empty(out, fan_in, device=device)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    radius, theta = fastact.cartesian_to_spherical(weight)
    bias = torch.randn(out, device=device) * 0.1
    return [t.to(dtype).requires_grad_() for t in (theta, radius, bias)], weight.to(dtype)

"""The DCT formulations the speed suite compiles (benchmarks/dct_formulations.py) compute
fastact.reference.dct_activation: values and gradients in float64 for every argument
combination, the benchmark's dtypes within their rounding, and under torch.compile."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from dct_formulations import FORMULATIONS  # noqa: E402

import fastact  # noqa: E402

# (shape, channel_dim, coefficient rows ("C": one per channel, 1: shared), K, frequencies,
#  boundary, domain); the first is the speed suite's.
CASES = [
    ((64, 48), 1, "C", 6, "odd", "periodic", (-1.0, 1.0)),
    ((64, 48), 1, "C", 16, "all", "clamp", (-1.0, 1.0)),
    ((3, 5, 7, 9), 1, "C", 7, "all", "periodic", (-0.5, 0.7)),
    ((2, 9, 20), -1, "C", 16, "odd", "clamp", (-2.0, 3.0)),
    ((1000,), 0, 1, 1, "all", "periodic", (-1.0, 1.0)),
    ((5, 6, 33), 1, 1, 2, "odd", "clamp", (-1.0, 1.0)),
]


def inputs(case, dtype):
    shape, channel_dim, rows, num_coeffs, frequencies, boundary, domain = case
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 1.3).to(dtype).requires_grad_()
    rows = shape[channel_dim] if rows == "C" else rows
    coeffs = torch.randn(rows, num_coeffs, dtype=torch.float64).to(dtype).requires_grad_()
    kwargs = dict(channel_dim=channel_dim, frequencies=frequencies, boundary=boundary,
                  domain=domain)
    return x, coeffs, kwargs


def value_and_grads(fn, x, coeffs, kwargs):
    y = fn(x, coeffs, **kwargs)
    grad = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    return (y, *torch.autograd.grad(y, [x, coeffs], grad))


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("name", list(FORMULATIONS))
def test_float64_values_and_gradients_match_the_reference(name, case):
    x, coeffs, kwargs = inputs(case, torch.float64)
    expected = value_and_grads(fastact.reference.dct_activation, x, coeffs, kwargs)
    actual = value_and_grads(FORMULATIONS[name], x, coeffs, kwargs)
    for what, a, e in zip(["y", "grad_x", "grad_coeffs"], actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9, msg=f"{name} {what}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(FORMULATIONS))
def test_benchmark_dtypes_within_rounding(name, dtype):
    """float32 and bfloat16 (computed in float32) agree with the float64 reference within a
    float32 error that grows like K^2 (the recurrence's) times the coefficients' magnitude,
    plus the output dtype's rounding."""
    case = CASES[1]
    x, coeffs, kwargs = inputs(case, dtype)
    y = FORMULATIONS[name](x, coeffs, **kwargs)
    assert y.dtype == dtype
    expected = fastact.reference.dct_activation(x.double(), coeffs.double(), **kwargs)
    num_coeffs = coeffs.shape[-1]
    scale = coeffs.double().abs().sum(-1).max()
    tolerance = num_coeffs**2 * 4 * torch.finfo(torch.float32).eps * scale
    tolerance = tolerance + torch.finfo(dtype).eps * expected.abs()
    assert ((y.double() - expected).abs() <= tolerance).all()


@pytest.mark.parametrize("name", list(FORMULATIONS))
def test_compiles_to_the_same_function(name):
    x, coeffs, kwargs = inputs(CASES[0], torch.float32)
    compiled = torch.compile(FORMULATIONS[name], fullgraph=True, dynamic=False)
    expected = value_and_grads(FORMULATIONS[name], x, coeffs, kwargs)
    actual = value_and_grads(compiled, x, coeffs, kwargs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)

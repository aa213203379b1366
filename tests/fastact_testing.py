"""Shared test helpers: the (backend, device) pairs to test, per-dtype tolerances, and
comparisons against fastact.reference in float64."""

from __future__ import annotations

import pytest
import torch

import fastact

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.gpu
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")


def _pairs():
    """Every (backend, device) pair fastact can run, as pytest params; the GPU ones are
    marked and skip here without a GPU (they are never counted as passes)."""
    pairs = [
        pytest.param("cpu", "cpu", id="cpu"),
        pytest.param("triton", "cpu", id="triton-interpreter"),
        pytest.param("reference", "cpu", id="reference-cpu"),
        pytest.param("cuda", "cuda", id="cuda", marks=[gpu, requires_gpu]),
        pytest.param("triton", "cuda", id="triton-cuda", marks=[gpu, requires_gpu]),
        pytest.param("reference", "cuda", id="reference-cuda", marks=[gpu, requires_gpu]),
    ]
    return [p for p in pairs if p.values[1] == "cuda" or p.values[0] in fastact.available_backends()]


BACKEND_DEVICES = _pairs()
# The kernel backends only (the reference is the ground truth they are checked against).
KERNEL_BACKEND_DEVICES = [p for p in BACKEND_DEVICES if p.values[0] != "reference"]


def interpreted(backend: str, device: str) -> bool:
    """Triton's interpreter runs ~1 s per million elements: keep its shapes small."""
    return backend == "triton" and device == "cpu"


def float64_reference(fn, *tensors, **kwargs):
    """fn run in float64 on float64 copies of the tensors (the ground truth), plus the copies."""
    copies = [t.detach().double().requires_grad_(t.requires_grad) for t in tensors]
    return fn(*copies, **kwargs), copies


def assert_close_to(actual: torch.Tensor, expected: torch.Tensor, tolerances: dict, what=""):
    """actual (any dtype) against the float64 expected with the (atol, rtol) of actual's dtype."""
    atol, rtol = tolerances[actual.dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True,
        msg=lambda m: f"{what} ({actual.dtype}): {m}",
    )


def without_interpreter_blind_spots(x: torch.Tensor, backend: str, device: str) -> torch.Tensor:
    """The Triton interpreter emulates bfloat16 with numpy and flushes its subnormals to zero
    (a GPU converts them exactly, and the GPU runs of the tests cover them): for the
    interpreter only, bfloat16 subnormal inputs become zeros of the same sign."""
    if not interpreted(backend, device) or x.dtype != torch.bfloat16:
        return x
    subnormal = (x != 0) & (x.abs() < torch.finfo(x.dtype).tiny)
    return torch.where(subnormal, x * 0, x)

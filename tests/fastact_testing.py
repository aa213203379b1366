"""Shared test helpers: the (backend, device) pairs to test, per-dtype tolerances, and
comparisons against fastact.reference in float64."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fastact

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.gpu
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")


# Per-dtype (atol, rtol) of the GmP layer, the maps and the inverse map against the float64
# reference.
# z = radius * relu(x . u + bias): a matmul of fan-in <= 64 with inputs ~1 (|x.u| ~ 1-8) in the
# dtype's precision (ATen's, fp32 accumulation for 16-bit) rounded to the dtype, times radius.
# Tolerances: the rounding of a sum of 64 products, absolute, plus the output's rounding.
LAYER_TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-2, 1e-2),
    torch.bfloat16: (1.5e-1, 4e-2),
}
# Gradients: sums over the batch (<= 37 rows) and the fan-in of products ~1 to ~10, the weight
# gradient G' = g'^T x rounded to the dtype by the matmul before dL/dradius = G'.u + b.S.
LAYER_GRAD_TOLERANCES = {
    torch.float64: (1e-11, 1e-11),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1.5e-1, 2e-2),
    torch.bfloat16: (1.0, 8e-2),
}


# u_k is a product of float64 factors (the kernels' sines and cosines are within ~1e-7 of
# float32's exact values, 1e-16 for float64) rounded once to the output dtype: the error is
# the output's rounding, |u| <= 1, so about half an ulp of 1, with room for the float-computed
# factors of 16/32-bit inputs (a few 1e-8 over tens of factors).
MAP_TOLERANCES = {
    torch.float64: (1e-14, 1e-14),
    torch.float32: (2e-7, 1e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}
# The gradients (|g| ~ 1, rows of at most 64: |dtheta| up to ~10) are computed in float64 and
# rounded once: the output's rounding, relative, plus the factors' float error times the sums.
MAP_GRAD_TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (2e-6, 2e-6),
    torch.float16: (1e-2, 2e-3),
    torch.bfloat16: (4e-2, 1e-2),
}


# theta_k = atan2(|w_{k+1:}|, w_k) in float64 rounded once to the dtype: half an ulp of |theta|
# <= pi (the float64 kernels and the reference differ in their atan2 by an ulp or two); the
# radius likewise, relative.
INVERSE_TOLERANCES = {
    torch.float64: (2e-15, 2e-15),
    torch.float32: (5e-7, 2e-7),
    torch.float16: (4e-3, 1e-3),
    torch.bfloat16: (2e-2, 8e-3),
}
# Gradients ~ 1/|w|: relative to their size, float64 sums then one rounding.
INVERSE_GRAD_TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-2, 4e-3),
    torch.bfloat16: (1e-1, 2e-2),
}


@dataclass(frozen=True)
class Host:
    """What this process can run, which decides the (backend, device) pairs to test (a unit
    test fakes a GPU host's answers)."""

    backends: tuple[str, ...]  # fastact.available_backends()
    has_gpu: bool
    triton_installed: bool
    triton_interpreting: bool  # TRITON_INTERPRET=1 was set before fastact was imported
    cuda_kernels: bool         # fastact._C was built with CUDA kernels


def this_host() -> Host:
    return Host(tuple(fastact.available_backends()), HAS_GPU, fastact.triton.AVAILABLE,
                fastact.triton.INTERPRET, fastact._extension.has_kernels_for("cuda"))


def backend_device_pairs(host: Host) -> list:
    """Every (backend, device) pair as a pytest param: those this host serves run; the others
    skip with the reason this host has (never counted as passes). The GPU pairs are marked
    `gpu` (make check-gpu runs them)."""
    pairs = []

    def pair(backend, device, name, skip=None):
        marks = [gpu] if device == "cuda" else []
        if skip:
            marks.append(pytest.mark.skip(reason=skip))
        pairs.append(pytest.param(backend, device, id=name, marks=marks))

    if "cpu" in host.backends:
        pair("cpu", "cpu", "cpu")
    if host.triton_interpreting:
        pair("triton", "cpu", "triton-interpreter")
    elif host.triton_installed and host.has_gpu:
        pair("triton", "cpu", "triton-interpreter",
             "a GPU owns Triton in this process: the interpreter ids run where TRITON_INTERPRET=1 "
             "is set before import (any host without a GPU)")
    pair("cuda-emulated", "cpu", "cuda-emulated", None if "cuda-emulated" in host.backends else
         "fastact._C_emulated is not built (FASTACT_EMULATED_CUDA=1 at build time; `make build` "
         "sets it)")
    pair("reference", "cpu", "reference-cpu")
    if not host.has_gpu:
        for backend, name in (("cuda", "cuda"), ("triton", "triton-cuda"),
                              ("reference", "reference-cuda")):
            pair(backend, "cuda", name, "needs a CUDA GPU")
        return pairs
    pair("cuda", "cuda", "cuda", None if host.cuda_kernels else
         "fastact._C was built without CUDA kernels (FASTACT_SKIP_CUDA=1, or no nvcc or a CPU "
         "build of torch at build time): make check-gpu builds them")
    pair("triton", "cuda", "triton-cuda",
         "Triton is not installed" if not host.triton_installed else
         "TRITON_INTERPRET=1 sends Triton to the interpreter in this process"
         if host.triton_interpreting else None)
    pair("reference", "cuda", "reference-cuda")
    return pairs


BACKEND_DEVICES = backend_device_pairs(this_host())
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

"""What the Triton kernels share: launch settings for elementwise work, compute dtypes,
flat-memory layout helpers, and the launch itself."""

from __future__ import annotations

import contextlib
import threading

import torch
import triton
import triton.language as tl

from fastact.triton import INTERPRET

# Memory-bound elementwise kernels: 2048 elements per program, 8 warps, so each thread
# moves 8 elements — two 128-bit accesses per tensor in float32, one in 16-bit types.
# The interpreter runs the same fixed config (it cannot autotune).
ELEMENTWISE_BLOCK = 2048
ELEMENTWISE_WARPS = 8

_TRITON_FLOAT = {torch.float32: tl.float32, torch.float64: tl.float64}


def torch_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes and keeps partial sums in: float64 for float64 inputs,
    float32 otherwise (the C++ kernels' compute dtype)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def compute_dtype(dtype: torch.dtype):
    """torch_compute_dtype as a Triton type: the kernels' ACC."""
    return _TRITON_FLOAT[torch_compute_dtype(dtype)]


def in_layout_of(like: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`t` with `like`'s strides (a copy only when they differ), so that kernels can walk
    both as flat memory. `like` is a fresh torch.empty_like output: always dense."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)


def elementwise_grid(n: int):
    return (triton.cdiv(n, ELEMENTWISE_BLOCK),)


# The Triton interpreter patches module state while it runs a kernel, so two threads
# interpreting at once break each other; compiled launches need no lock.
_interpreter_lock = threading.Lock() if INTERPRET else contextlib.nullcontext()


def launch(kernel, grid, *args, **kwargs) -> None:
    """kernel[grid](*args, **kwargs), one interpreted launch at a time."""
    with _interpreter_lock:
        kernel[grid](*args, **kwargs)

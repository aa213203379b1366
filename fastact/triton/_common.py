"""What the Triton kernels share: launch settings for elementwise work, compute dtypes,
flat-memory layout helpers, and the compile specs `make check-cuda` compiles ahead of time."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from fastact.triton import INTERPRET

# Memory-bound elementwise kernels: 2048 elements per program, 8 warps, so each thread
# moves 8 elements — two 128-bit accesses per tensor in float32, one in 16-bit types.
# The interpreter runs the same fixed config (it cannot autotune).
ELEMENTWISE_BLOCK = 2048
ELEMENTWISE_WARPS = 8

_TRITON_TYPE = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
}


def compute_dtype(dtype: torch.dtype):
    """The dtype a kernel computes in: float64 for float64 inputs, float32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


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


@dataclass(frozen=True)
class CompileSpec:
    """One specialisation of a kernel for `make check-cuda` (tools/check_cuda.py) to compile
    ahead of time: argument name -> Triton type ("*fp32", "i64", "constexpr"), the
    constexpr values, and whether the PTX must show 128-bit global loads (contiguous
    access). Pointers and integers are marked 16-divisible, as the JIT does for aligned
    tensors and sizes at run time."""

    kernel: object
    signature: dict[str, str]
    constexprs: dict[str, object] = field(default_factory=dict)
    num_warps: int = 4
    vector_loads: bool = True

    @property
    def name(self) -> str:
        types = ",".join(t for t in self.signature.values() if t != "constexpr")
        return f"{self.kernel.__name__}({types})"


def elementwise_specs(kernel, pointers: list[str], sizes: list[str]) -> list[CompileSpec]:
    """The spec of an elementwise kernel for each of the four float dtypes."""
    specs = []
    for dtype, ttype in _TRITON_TYPE.items():
        signature = {p: f"*{ttype}" for p in pointers}
        signature.update({s: "i64" for s in sizes})
        signature.update({"BLOCK": "constexpr", "ACC": "constexpr"})
        specs.append(
            CompileSpec(
                kernel,
                signature,
                {"BLOCK": ELEMENTWISE_BLOCK, "ACC": compute_dtype(dtype)},
                ELEMENTWISE_WARPS,
            )
        )
    return specs

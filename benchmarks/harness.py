"""The speed benchmark's machinery: cases, providers, timing with percentiles, and the
memory-bound limit.

A Case is one (op, mode, dtype, size) with a zero-argument callable per provider:
  fastact[<backend>]  fastact on each backend runnable on the device
  eager               fastact.reference in eager mode
  compiled            fastact.reference under torch.compile
  limit               a native op moving the same bytes (x.clone() for a forward,
                      torch.add(g, x) for an elementwise backward, both for forward+backward)
All providers of a case are timed in one process, interleaved over several rounds so that a
slow spell of a shared machine hits them all alike; results are medians with p20/p80, and the
figures that matter are ratios within a run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils import benchmark as torch_benchmark

import fastact

MODES = ("forward", "backward", "forward+backward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


@dataclass
class Case:
    """One (op, mode, dtype, size). `providers` maps a name ("fastact[cpu]", "eager",
    "compiled", "limit", ...) to a zero-argument callable; `limit_name` says what the "limit"
    provider runs (e.g. "x.clone()", "nn.Linear+nn.ReLU")."""

    op: str
    mode: str
    dtype: str
    size: str  # a label: "2^24", "4096x1024", ...
    numel: int
    providers: dict[str, Callable[[], object]] = field(default_factory=dict)
    limit_name: str = "memory-bound limit"


@dataclass
class Timing:
    p20: float
    p50: float
    p80: float

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        if len(samples) == 1:
            return cls(samples[0], samples[0], samples[0])
        q = statistics.quantiles(samples, n=10, method="inclusive")
        return cls(q[1], statistics.median(samples), q[7])


def fastact_backends(device: str) -> list[str]:
    """The kernel backends runnable on `device` (the Triton interpreter is not benchmarked)."""
    runnable = {"cpu": ["cpu"], "cuda": ["cuda", "triton"]}[device]
    return [b for b in runnable if b in fastact.available_backends()]


def with_backend(backend: str, fn: Callable) -> Callable:
    def run(*args):
        with fastact.use_backend(backend):
            return fn(*args)

    return run


def timed_modes(forward: Callable, inputs: list[torch.Tensor], grad: torch.Tensor,
                mode: str) -> Callable[[], object]:
    """A zero-argument callable running `mode` of forward(*inputs): backward alone reuses
    one forward's graph (retain_graph); gradients go to fresh tensors (autograd.grad), so
    nothing accumulates between calls."""
    needs_grad = [t for t in inputs if t.requires_grad]
    if mode == "forward":
        def run():
            with torch.no_grad():
                return forward(*inputs)
        return run
    if mode == "backward":
        out = forward(*inputs)
        return lambda: torch.autograd.grad(out, needs_grad, grad, retain_graph=True)
    return lambda: torch.autograd.grad(forward(*inputs), needs_grad, grad)


def compiled(fn: Callable) -> Callable:
    return torch.compile(fn, fullgraph=True, dynamic=False)


def measure(fn: Callable[[], object], device: str, min_run_time: float) -> list[float]:
    """Per-call times in seconds of a few blocks of calls (one sample per block)."""
    if device == "cuda":
        import triton.testing

        return [triton.testing.do_bench(fn, warmup=25, rep=max(1, int(min_run_time * 1000)),
                                        return_mode="median") / 1000]
    timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn},
                                  num_threads=torch.get_num_threads())
    return list(timer.blocked_autorange(min_run_time=min_run_time).times)


def run_case(case: Case, device: str, rounds: int, min_run_time: float) -> dict[str, Timing]:
    """Times every provider of `case`, interleaved over `rounds` rounds."""
    for fn in case.providers.values():  # warm up: compile, allocate, fault pages in
        for _ in range(2):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in case.providers}
    for _ in range(rounds):
        for name, fn in case.providers.items():
            samples[name] += measure(fn, device, min_run_time / rounds)
    return {name: Timing.of(values) for name, values in samples.items()}

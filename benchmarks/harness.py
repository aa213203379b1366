"""The speed benchmark's machinery: cases, providers, timing with percentiles, and the
memory-bound limit.

A Case is one (op, mode, dtype, size) with a zero-argument callable per provider:
  fastact[<backend>]  fastact on each backend runnable on the device
  eager               fastact.reference in eager mode
  compiled            fastact.reference under torch.compile
  limit               a native op moving the same bytes (x.clone() for a forward,
                      torch.add(g, x) for an elementwise backward, both for forward+backward)
All providers of a case are timed in one process, interleaved over several rounds (in
alternating order) so that a slow spell of a shared machine hits them all alike; results are
medians with p20/p80, and the figures that matter are ratios within a run.

Allocation. On CPU every call allocates its outputs with malloc. By default glibc adapts its
thresholds as it goes and sometimes trims freed memory from its heap, so whether the next
output page-faults (about 1.5 us per 4 KiB page here, more than the kernel itself for 1 MiB+)
depends on the history of the process, not on the provider. `steady_allocator()` fixes that:
freed memory stays in the heap (no trimming), allocations below 32 MiB reuse it, larger ones
are mapped fresh each call (and fault, for every provider alike), as glibc does by default.
Where an output lands relative to the inputs matters too: here the Hat kernel takes 0.16 ms
instead of 0.12 ms on 2^20 float32 when its output starts 448-576 bytes after its input
modulo 4 KiB (most likely 4 KiB aliasing of its loads with earlier stores). So each round
holds a block of random size (`HeapShift`), which moves the outputs of that round by a
random multiple of 64 bytes: the samples cover several layouts, not just the one this
process happened to get.

A bench module (bench_<op>.py) defines `cases(device, dtypes, quick)` yielding Cases, and
SIZES / QUICK_SIZES dicts (label -> size) that run.py reads for its estimate. QUICK_SIZES is
one size, the regression check's: tensors of about 1 MiB (in L2, where the ratios are steady
on a shared machine; see bench_hat.py), each call 20 us or more. The full SIZES span in-cache
and out-of-cache sizes; each op's full run should stay within about 3 minutes here.

Timing. CPU: torch.utils.benchmark's Timer, in blocks of calls sized once per provider so that
a sample lasts at least MIN_SAMPLE_S; many short samples let the median drop the ones a
preemption hit (a long block would average the preemption in). GPU: triton.testing.do_bench
(CUDA events, synchronised, L2 flushed between calls), every call a sample.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils import benchmark as torch_benchmark

import fastact

MODES = ("forward", "backward", "forward+backward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}

MIN_SAMPLE_S = 5e-4  # shortest CPU sample: timer overhead (~1 us) stays below 0.2 %


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD_MAX = 32 * 2**20                 # the largest mallopt accepts on 64-bit


def configure_malloc(mmap_threshold: int, trim_threshold: int = 2**31 - 1) -> bool:
    """Fixes glibc's thresholds for this process (setting them disables its adaptation):
    allocations of `mmap_threshold` bytes or more are mapped on their own and unmapped on
    free; the heap is trimmed only when `trim_threshold` bytes at its top are free. False
    where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def steady_allocator() -> bool:
    """The benchmark's allocator setting (see the module's docstring)."""
    return configure_malloc(MMAP_THRESHOLD_MAX)


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

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.op, self.mode, self.dtype, self.size)


@dataclass
class Timing:
    """Seconds per call: percentiles over all samples, and each round's median (the rounds
    are interleaved across providers, so round i of two providers saw the same machine)."""

    p20: float
    p50: float
    p80: float
    rounds: list[float | None] = field(default_factory=list)  # None: no sample that round
    samples: int = 1

    @classmethod
    def of(cls, samples: list[float], rounds: list[float | None] | None = None) -> "Timing":
        if len(samples) == 1:
            return cls(samples[0], samples[0], samples[0], rounds or [samples[0]], 1)
        q = statistics.quantiles(samples, n=10, method="inclusive")
        return cls(q[1], statistics.median(samples), q[7], rounds or [], len(samples))


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
    """fn under torch.compile, specialised to each shape (the compiler's best case). That is
    one graph per shape, dtype and grad mode: a suite's sizes and dtypes make more than
    dynamo's default limit of 8 per function, past which fullgraph=True fails."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(fn, fullgraph=True, dynamic=False)


class Sampler:
    """Times one provider. Construction warms it up (compiles, allocates, faults pages in)
    and estimates one call's time, which sizes the CPU blocks."""

    def __init__(self, fn: Callable[[], object], device: str):
        self.fn, self.device = fn, device
        fn()
        self._sync()
        start = time.perf_counter()
        fn()
        self._sync()
        self.call_s = max(time.perf_counter() - start, 1e-9)
        self.number = max(1, math.ceil(MIN_SAMPLE_S / self.call_s))
        if device == "cpu":
            self._timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn},
                                                num_threads=torch.get_num_threads())

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def take(self, budget_s: float) -> list[float]:
        """Per-call times (s) of samples taken for about `budget_s`, at least one."""
        if self.device == "cuda":
            import triton.testing

            ms = triton.testing.do_bench(self.fn, warmup=1, rep=max(1, round(budget_s * 1e3)),
                                         return_mode="all")
            return [t / 1e3 for t in ms]
        # Timer.timeit would add two warm-up calls per sample and blocked_autorange would
        # re-estimate the block size each time; the block size is fixed once here instead.
        times, spent = [], 0.0
        while not times or spent < budget_s:
            block = self._timer._timeit(self.number)
            times.append(block / self.number)
            spent += block
        return times


def sampled_rounds(call_s: float, rounds: int, min_run_time: float, min_samples: int) -> set[int]:
    """The rounds in which a provider is sampled: all of them, unless one call takes longer
    than its share of a round; then as many as `min_run_time` pays for, at least
    `min_samples`, spread evenly over the rounds."""
    if call_s <= min_run_time / rounds:
        return set(range(rounds))
    wanted = min(rounds, max(min_samples, int(min_run_time / call_s)))
    if wanted == 1:
        return {rounds // 2}
    return {round(i * (rounds - 1) / (wanted - 1)) for i in range(wanted)}


class HeapShift:
    """Holds a block of 1 MiB + 64 k bytes (k random) on CPU: glibc places the next
    allocations after it, so their offset from the inputs moves by 64 k bytes (mod 4 KiB)."""

    def __init__(self, device: str, seed: int = 0):
        self.device, self.rng, self.block = device, random.Random(seed), None

    def next(self) -> None:
        self.block = None
        if self.device == "cpu":
            self.block = torch.empty(2**20 + 64 * self.rng.randrange(64), dtype=torch.uint8)


def run_cases(cases: list[Case], device: str, rounds: int, min_run_time: float,
              min_samples: int = 3, progress=None) -> list[dict[str, Timing]]:
    """Times every provider of every case, interleaved over `rounds` rounds: each round visits
    every (case, provider), in alternating order, so each one's samples are spread over the
    whole run and a slow spell of the machine hits them all alike; each round moves the heap
    (HeapShift). Each provider gets about
    `min_run_time` seconds of samples in all. `progress.update(label, weight)` (optional) is
    told of each warmed-up case (weight 1) and each round (weight len(cases))."""
    samplers = []
    for case in cases:
        samplers.append({name: Sampler(fn, device) for name, fn in case.providers.items()})
        if progress:
            progress.update(f"{' '.join(case.key)} warm-up", 1)
    units = [(i, name) for i, case_samplers in enumerate(samplers) for name in case_samplers]
    plan = {(i, name): sampled_rounds(samplers[i][name].call_s, rounds, min_run_time, min_samples)
            for i, name in units}
    samples: dict = {unit: [] for unit in units}
    per_round: dict = {unit: [] for unit in units}
    shift = HeapShift(device)
    for r in range(rounds):
        shift.next()
        for i, name in (units if r % 2 == 0 else units[::-1]):
            if r not in plan[i, name]:
                per_round[i, name].append(None)
                continue
            taken = samplers[i][name].take(min_run_time / len(plan[i, name]))
            samples[i, name] += taken
            per_round[i, name].append(statistics.median(taken))
        if progress:
            progress.update((' '.join(cases[0].key) + " " if len(cases) == 1 else "")
                            + f"round {r + 1}/{rounds}", len(cases))
    return [{name: Timing.of(samples[i, name], per_round[i, name]) for name in case_samplers}
            for i, case_samplers in enumerate(samplers)]


def peak_memory_cuda(fn: Callable[[], object]) -> int:
    """Bytes the CUDA caching allocator held at the peak of one call, above what was
    allocated before it (max_memory_allocated)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before

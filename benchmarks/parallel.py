"""The untimed work of a benchmark run, side by side.

The spectral suite's parts (single-threaded training runs and error spectra) and the
torch.compile of the speed suite's reference are independent of each other and never timed.
On a 2-core machine they are most of a `make bench-quick` on a cold inductor cache, and one
process leaves a core idle much of the time, so they run first, at once: the parts in worker
processes, the compiles in this process meanwhile (dynamo keeps what it compiled in memory, so
the speed suite's own calls then compile nothing). The speed suite then times on a machine
with nothing else of ours running.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Task:
    """fn(*args) under a label for the progress lines. A task runs in a worker process unless
    `here`; then fn must be a module-level function (a spawned worker imports it by name) and
    its arguments and result picklable. `estimate_s` (a rough guess of its seconds) only
    orders the tasks."""

    label: str
    fn: Callable
    args: tuple = ()
    estimate_s: float = 0.0
    here: bool = False


def _timed(fn: Callable, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def run_tasks(tasks: list[Task], workers: int | None = None,
              announce: Callable[[str], None] = lambda line: print(line, flush=True)) -> list:
    """The results of `tasks`, in their order.

    The `here` tasks run in this process, in order, while `workers` processes (default: one per
    usable CPU, less the one this process keeps busy with `here` tasks) run the others, the
    longest (by estimate) first, so that the run ends on short tasks rather than on one long
    task on one CPU. Done with its own, this process takes those no worker has started yet.
    Without `here` tasks and with one worker, everything runs here. Each task's label and
    seconds are announced as it ends; a task that raises stops the run with its exception.
    Workers are spawned, not forked: a fork of a process that has run OpenMP or CUDA is not
    safe."""
    results: list = [None] * len(tasks)
    local = [index for index, task in enumerate(tasks) if task.here]
    remote = sorted((index for index, task in enumerate(tasks) if not task.here),
                    key=lambda index: -tasks[index].estimate_s)
    # This process works on the `here` tasks meanwhile: one worker fewer (a 2-vCPU guest gives
    # two busy processes only ~1.4x the throughput of one; a third adds nothing but switching).
    workers = min(len(remote), workers or max(1, usable_cpus() - bool(local)))
    lock, finished = threading.Lock(), 0

    def done(index: int, seconds: float) -> None:  # from this thread and the pool's
        nonlocal finished
        with lock:
            finished += 1
            announce(f"  [{finished}/{len(tasks)}] {tasks[index].label}: {seconds:.0f} s")

    def run_here(indices: list[int]) -> None:
        for index in indices:
            results[index], seconds = _timed(tasks[index].fn, *tasks[index].args)
            done(index, seconds)

    if not remote or (workers <= 1 and not local):
        run_here(local + remote)
        return results
    announce(f"  {len(remote)} task(s) for {workers} worker process(es)"
             + (f", {len(local)} in this one first" if local else ""))

    def collect(index: int):
        def callback(future) -> None:
            if not future.cancelled() and future.exception() is None:
                results[index], seconds = future.result()
                done(index, seconds)
        return callback

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = []
        for index in remote:
            futures.append(pool.submit(_timed, tasks[index].fn, *tasks[index].args))
            futures[-1].add_done_callback(collect(index))
        try:
            run_here(local)
            for index, future in zip(remote, futures):
                if future.cancel():  # no worker has started it yet: this process is free
                    run_here([index])
            for future in futures:
                if not future.cancelled():
                    future.result()  # raises a worker's exception here
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
